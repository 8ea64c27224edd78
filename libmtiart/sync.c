/*
 * Synchronisation primitives shared by every part of the runtime, and jobs: work that the
 * idle workers of a device help with (a multi-block kernel, a graph replay).
 *
 * This file is the bottom of the runtime's layering: it calls nothing else in libmtiart,
 * so a worker's call chain (device.c -> stream.c -> exec.c -> op.c -> here) never comes
 * back through a file it has already passed.
 */
#include "internal.h"

#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ primitives */

bool mt_waits_block;
_Thread_local bool mt_tl_on_worker;
_Thread_local const struct mt_stream *mt_running_stream;

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

void mt_spin_lock_slow(mt_spinlock *lock) {
    if (mt_waits_block) {
        /* The fast path's exchange may have turned a 2 into a 1: setting 2 here keeps the
         * sleepers' mark, so the unlock that finally frees the lock wakes one of them. */
        while (atomic_exchange_explicit(&lock->locked, 2, memory_order_acquire) != 0)
            mt_futex_wait(&lock->locked, 2);
        return;
    }
    for (unsigned spins = 0;; spins++) {
        while (atomic_load_explicit(&lock->locked, memory_order_relaxed)) {
            if (spins++ < 64) mt_cpu_relax();
            else sched_yield();
        }
        if (!atomic_exchange_explicit(&lock->locked, 1, memory_order_acquire)) return;
    }
}

void mt_spin_unlock_wake(mt_spinlock *lock) {
    if (atomic_exchange_explicit(&lock->locked, 0, memory_order_release) == 2)
        mt_futex_wake(&lock->locked, 1);
}

void mt_spin_budget_init(mt_spin_budget *b, uint64_t max_ns) {
    atomic_init(&b->ns, (unsigned)(mt_waits_block ? 0 : max_ns));
    atomic_init(&b->woke_at, 0);
}

void mt_spin_budget_learn(mt_spin_budget *b, uint64_t waited_ns, uint64_t max_ns) {
    if (max_ns == 0) return;
    uint64_t floor = MT_SPIN_FLOOR_NS < max_ns ? MT_SPIN_FLOOR_NS : max_ns;
    uint64_t budget = mt_spin_budget_ns(b);
    if (waited_ns <= max_ns) {
        /* Spinning (twice as long, for the spread of such waits) would have caught it. */
        uint64_t enough = 2 * waited_ns < max_ns ? 2 * waited_ns : max_ns;
        if (budget < enough) budget = enough;
    } else {
        budget /= 2;
    }
    if (budget < floor) budget = floor;
    atomic_store_explicit(&b->ns, (unsigned)budget, memory_order_relaxed);
}

void mt_spin_budget_learn_wait(mt_spin_budget *b, uint64_t start, uint64_t slept_at,
                               uint64_t max_ns) {
    uint64_t end = mt_now_ns();
    if (slept_at) {
        uint64_t woke = atomic_load_explicit(&b->woke_at, memory_order_relaxed);
        if (woke >= slept_at && woke < end) end = woke;
    }
    mt_spin_budget_learn(b, end - start, max_ns);
}

void mt_spin_budget_waking(mt_spin_budget *b) {
    atomic_store_explicit(&b->woke_at, mt_now_ns(), memory_order_relaxed);
}

uint64_t mt_deadline_after(uint64_t timeout_ns) {
    if (timeout_ns == MT_FOREVER) return MT_FOREVER;
    uint64_t now = mt_now_ns();
    return timeout_ns < MT_FOREVER - now ? now + timeout_ns : MT_FOREVER - 1;
}

/* mt_wait_counter's waiter as the device's host spinner, for stream `s`: while it spins, the
 * jobs of `s` wake no sleeping worker (mt_job_post), since it runs their pieces itself.
 * Taken while the stream's last job was one it may help with, and a CPU would otherwise
 * idle: a worker sleeps, or one spins for work, which then goes to sleep (two threads
 * spinning on two CPUs would leave none for the work). */
static bool take_spinner_role(mt_device *dev, const mt_stream *s) {
    if (dev->num_workers <= 1 || !atomic_load_explicit(&s->host_may_help, memory_order_relaxed))
        return false;
    int expected = atomic_load_explicit(&dev->spinning, memory_order_relaxed);
    if (expected == MT_SPINNER_HOST ||
        (expected == 0 && atomic_load_explicit(&dev->sleepers, memory_order_relaxed) == 0) ||
        !atomic_compare_exchange_strong(&dev->spinning, &expected, MT_SPINNER_HOST))
        return false;
    atomic_store(&dev->spinner_stream, s);
    return true;
}

/* A job of the stream posted meanwhile woke nobody: wake for it now. seq_cst stores then
 * load: pairs with the poster's increment of open_jobs then load of `spinning`, so either
 * the poster wakes a worker or this thread sees its job. */
static void leave_spinner_role(mt_device *dev) {
    atomic_store(&dev->spinner_stream, NULL);
    atomic_store(&dev->spinning, 0);
    if (atomic_load(&dev->open_jobs) != 0) mt_device_wake(dev, dev->num_workers - 1);
}

bool mt_wait_counter(atomic_uint_least64_t *counter, uint64_t target, atomic_uint *word,
                     atomic_int *waiters, atomic_uint_least64_t *wake_at, mt_spin_budget *budget,
                     uint64_t deadline, const mt_stream *help) {
    if (atomic_load_explicit(counter, memory_order_acquire) >= target) return true;
    const uint64_t budget_ns = budget ? mt_spin_budget_ns(budget) : 0;
    uint64_t spin = budget_ns, start = mt_now_ns(), now = start, slept_at = 0;
    mt_device *dev = help && budget_ns ? help->dev : NULL;
    bool spinner = dev && take_spinner_role(dev, help);
    bool done = true;
    for (unsigned i = 1; atomic_load_explicit(counter, memory_order_acquire) < target; i++) {
        if (spin && (i & 15) != 0) {
            mt_cpu_relax();
            continue;
        }
        if (spinner) {
            if (atomic_load_explicit(&dev->open_jobs, memory_order_relaxed) &&
                mt_help_jobs(dev, help, deadline)) {
                start = mt_now_ns(); /* work is arriving: spin on */
                continue;
            }
            /* Every worker is awake: no CPU is left for this thread to help on. */
            if (atomic_load_explicit(&dev->sleepers, memory_order_relaxed) == 0) {
                leave_spinner_role(dev);
                spinner = false;
            }
        }
        now = mt_now_ns();
        if (now >= deadline) {
            done = false;
            break;
        }
        if (now - start < spin) continue;
        spin = 0; /* sleeping from now on */
        if (!slept_at) slept_at = now;
        if (spinner) {
            leave_spinner_role(dev);
            spinner = false;
        }
        unsigned seen = atomic_load(word);
        /* seq_cst increment then re-check: pairs with the store-then-load of waiters on the
         * completing side, so a wake cannot be missed. The target goes in after `seen` was
         * read: a completer that clears it changes `word` afterwards, so the sleep below
         * ends at once and the target goes in again. A signal or the timeout ends the
         * sleep early; the loop then looks again. */
        atomic_fetch_add(waiters, 1);
        if (wake_at) {
            uint64_t lowest = atomic_load(wake_at);
            while (target < lowest && !atomic_compare_exchange_weak(wake_at, &lowest, target)) {}
        }
        if (atomic_load(counter) < target) {
            if (deadline == MT_FOREVER) mt_futex_wait(word, seen);
            else futex_wait_for(word, seen, deadline - now);
        }
        atomic_fetch_sub(waiters, 1);
    }
    if (spinner) leave_spinner_role(dev);
    /* From the last piece this thread ran: how long the wait took once work stopped coming. */
    if (budget_ns) mt_spin_budget_learn_wait(budget, start, slept_at, mt_spin_ns);
    return done;
}

uint64_t mt_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void mt_device_wake(mt_device *dev, int count) {
    /* A spinning worker will see the new work by itself. */
    if (atomic_load(&dev->spinning) != MT_SPINNER_WORKER && atomic_load(&dev->sleepers) > 0) {
        mt_spin_budget_waking(&dev->idle_budget);
        atomic_fetch_add(&dev->wake_word, 1);
        mt_futex_wake(&dev->wake_word, count);
    }
}

/* ------------------------------------------------------------------ jobs */

mt_job_slot *mt_job_post(mt_device *dev, mt_job *job) {
    if (dev->num_workers <= 1) return NULL;
    mt_stream *s = (mt_stream *)mt_running_stream;
    job->stream = s;
    bool helpable = job->help_host != NULL;
    if (s && atomic_load_explicit(&s->host_may_help, memory_order_relaxed) != helpable)
        atomic_store_explicit(&s->host_may_help, helpable, memory_order_relaxed);
    for (int i = 0; i < MT_MAX_JOBS; i++) {
        mt_job *expected = NULL;
        mt_job_slot *slot = &dev->jobs[i];
        if (atomic_compare_exchange_strong(&slot->job, &expected, job)) {
            atomic_store(&slot->open, 1);
            atomic_fetch_add(&dev->open_jobs, 1);
            /* A host spinning for this stream's jobs helps instead (its leave wakes for
             * the jobs it leaves open). */
            if (!(job->help_host && atomic_load(&dev->spinning) == MT_SPINNER_HOST &&
                  atomic_load(&dev->spinner_stream) == job->stream))
                mt_device_wake(dev, dev->num_workers - 1);
            return slot;
        }
    }
    return NULL;
}

static void close_job(mt_device *dev, mt_job_slot *slot) {
    if (atomic_exchange(&slot->open, 0)) atomic_fetch_sub(&dev->open_jobs, 1);
}

/* Announce the calling thread in the slot, then take its job if it is open (NULL: none).
 * Either way job_leave follows; `helped`: the job's help function ran and returned, so the
 * job has nothing left to hand out and closes. */
static mt_job *job_enter(mt_job_slot *slot) {
    /* Announce ourselves before reading the job, so that its owner waits for us. */
    atomic_fetch_add(&slot->users, 1);
    mt_job *job = atomic_load(&slot->job);
    return job && atomic_load(&slot->open) ? job : NULL;
}

static void job_leave(mt_device *dev, mt_job_slot *slot, bool helped) {
    if (helped) close_job(dev, slot);
    if (atomic_fetch_sub(&slot->users, 1) == 1 && atomic_load(&slot->retiring)) {
        mt_spin_budget_waking(&dev->job_budget);
        mt_futex_wake(&slot->users, INT_MAX);
    }
}

bool mt_help_jobs(mt_device *dev, const mt_stream *host_for, uint64_t deadline) {
    bool ran = false;
    for (int i = 0; i < MT_MAX_JOBS; i++) {
        mt_job_slot *slot = &dev->jobs[i];
        if (!atomic_load_explicit(&slot->open, memory_order_relaxed)) continue;
        mt_job *job = job_enter(slot);
        bool exhausted = false;
        if (job && (!host_for || (job->help_host && job->stream == host_for))) {
            /* The pieces run as on a worker: a kernel that waits for the device is refused
             * (mt_check_may_wait), the jobs they post name the job's stream. */
            bool was_on_worker = mt_tl_on_worker;
            const mt_stream *was_running = mt_running_stream;
            mt_tl_on_worker = true;
            mt_running_stream = job->stream;
            if (host_for) {
                exhausted = job->help_host(job, dev, deadline, &ran);
            } else {
                job->help(job); /* the one call back up into the file that posted the job */
                exhausted = ran = true;
            }
            mt_tl_on_worker = was_on_worker;
            mt_running_stream = was_running;
        }
        job_leave(dev, slot, exhausted);
    }
    return ran;
}

void mt_job_retire(mt_device *dev, mt_job_slot *slot) {
    if (!slot) return;
    close_job(dev, slot);
    atomic_store(&slot->job, NULL);
    /* Helpers that already entered may still be finishing their piece of the job (a
     * kernel's block, a graph's chain): spin for as long as such waits take, then sleep. */
    if (atomic_load(&slot->users) == 0) return;
    uint64_t spin = mt_spin_budget_ns(&dev->job_budget);
    uint64_t start = spin ? mt_now_ns() : 0;
    for (unsigned i = 1; spin && atomic_load(&slot->users) != 0; i++) {
        mt_cpu_relax();
        if ((i & 15) == 0 && mt_now_ns() - start >= spin) break;
    }
    /* A count, not a flag: once the job is withdrawn the slot may take another one, whose
     * owner can come to wait here as well. seq_cst increment then load of users: pairs
     * with a helper's decrement then load of retiring in job_leave. */
    atomic_fetch_add(&slot->retiring, 1);
    uint64_t slept_at = 0;
    for (unsigned users; (users = atomic_load(&slot->users)) != 0;) {
        if (spin && !slept_at) slept_at = mt_now_ns();
        mt_futex_wait(&slot->users, users);
    }
    atomic_fetch_sub(&slot->retiring, 1);
    if (spin) mt_spin_budget_learn_wait(&dev->job_budget, start, slept_at, mt_job_spin_ns);
}
