/*
 * Streams: in-order queues of operations drained by the device's workers.
 *
 * Producers append fixed-size op slots to a chunked queue under a short spinlock and
 * publish them by bumping `enqueued`. A stream is scheduled (IDLE -> QUEUED) when its
 * first op arrives; one worker at a time drains it (RUNNING) and hands it back (IDLE).
 * Completion is a counter, so synchronizing means waiting for `completed` to reach the
 * `enqueued` value seen at the call. A stream blocked on an event is parked (BLOCKED)
 * without holding a worker, so cross-stream waits can never starve the device.
 */
#include "internal.h"

#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef MTIART_HAVE_VALGRIND
#include <valgrind/memcheck.h>
/* A consumed slot keeps stale device pointers until it is reused; undefined words are no
 * pointers to valgrind's leak checker, so a block the program lost is "definitely lost". */
#define VG_FORGET_OP(op) VALGRIND_MAKE_MEM_UNDEFINED((op), sizeof(mt_op))
#else
#define VG_FORGET_OP(op) ((void)(op))
#endif

static atomic_uint_least64_t next_stream_id = 1;

/* ------------------------------------------------------------------ lifetime */

static void release_stream(void *s) { mt_stream_unref(s); }

static mtiart_status stream_new(mt_device *dev, int priority, uint32_t flags, bool is_default,
                                mt_stream **out) {
    mt_stream *s = aligned_alloc(MT_CACHELINE, (sizeof(mt_stream) + MT_CACHELINE - 1) /
                                                   MT_CACHELINE * MT_CACHELINE);
    mt_chunk *chunk = aligned_alloc(MT_CACHELINE, sizeof *chunk);
    if (!s || !chunk) {
        free(s);
        free(chunk);
        return mt_oom();
    }
    memset(s, 0, sizeof *s);
    chunk->next = NULL;
    atomic_init(&s->refcount, 1);
    s->id = atomic_fetch_add(&next_stream_id, 1);
    s->dev = dev;
    s->priority = priority;
    s->flags = flags;
    s->is_default = is_default;
    s->head_chunk = s->tail_chunk = chunk;
    atomic_init(&s->wake_at, UINT64_MAX);
    mt_spin_budget_init(&s->linger_budget, mt_linger_ns);
    mt_spin_budget_init(&s->wait_budget, mt_spin_ns);
    pthread_mutex_lock(&dev->streams_lock);
    s->dev_next = dev->streams;
    if (dev->streams) dev->streams->dev_prev = s;
    dev->streams = s;
    pthread_mutex_unlock(&dev->streams_lock);
    /* The reference taken at creation is the handle table's. */
    mtiart_status st = mt_handle_register(s, MT_KIND_STREAM, release_stream, &s->handle);
    if (st) return st;
    *out = s;
    return MTIART_SUCCESS;
}

mtiart_status mt_stream_create_default(mt_device *dev) {
    return stream_new(dev, 0, MTIART_STREAM_DEFAULT, true, &dev->default_stream);
}

void mt_stream_ref(mt_stream *s) {
    atomic_fetch_add_explicit(&s->refcount, 1, memory_order_relaxed);
}

bool mt_stream_try_ref(mt_stream *s) {
    int count = atomic_load(&s->refcount);
    while (count > 0)
        if (atomic_compare_exchange_weak(&s->refcount, &count, count + 1)) return true;
    return false;
}

void mt_stream_unref(mt_stream *s) {
    if (atomic_fetch_sub_explicit(&s->refcount, 1, memory_order_acq_rel) != 1) return;
    mt_device *dev = s->dev;
    pthread_mutex_lock(&dev->streams_lock);
    if (s->dev_prev) s->dev_prev->dev_next = s->dev_next;
    else dev->streams = s->dev_next;
    if (s->dev_next) s->dev_next->dev_prev = s->dev_prev;
    pthread_mutex_unlock(&dev->streams_lock);
    atomic_fetch_add(&dev->streams_freed, 1); /* its cached memory is free for others now */
    /* Everything was consumed (the scheduling reference is gone), so one chunk is left. */
    free(s->head_chunk);
    free(atomic_load(&s->spare_chunk));
    free(s->frontier);
    free(s->last_invalidation);
    free(s);
}

/* ------------------------------------------------------------------ errors */

/* Record a sticky error: the first one wins until a synchronize or query reports it. */
static void set_sticky(mt_stream *s, mtiart_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_sticky(mt_stream *s, mtiart_status status, const char *fmt, ...) {
    mt_spin_lock(&s->error_lock);
    if (atomic_load(&s->error_status) == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->error_message, sizeof s->error_message, fmt, ap);
        va_end(ap);
        atomic_store(&s->error_status, status);
    }
    mt_spin_unlock(&s->error_lock);
}

static mtiart_status report_sticky(mt_stream *s) {
    if (MT_LIKELY(atomic_load_explicit(&s->error_status, memory_order_acquire) == 0))
        return MTIART_SUCCESS;
    char message[sizeof s->error_message];
    mt_spin_lock(&s->error_lock);
    mtiart_status status = atomic_load(&s->error_status);
    memcpy(message, s->error_message, sizeof message);
    atomic_store(&s->error_status, 0);
    mt_spin_unlock(&s->error_lock);
    if (status == 0) return MTIART_SUCCESS;
    return mt_set_error(status, "stream %llu: %s", (unsigned long long)s->id, message);
}

/* ------------------------------------------------------------------ ready lists */

/* Put a stream on its device's ready list, without waking anyone (see push_ready). */
static void enlist_ready(mt_device *dev, mt_stream *s) {
    int level = -s->priority; /* 0 .. MT_NUM_PRIORITIES-1, higher is more urgent */
    s->ready_next = NULL;
    mt_spin_lock(&dev->ready_lock);
    if (dev->ready_tail[level]) dev->ready_tail[level]->ready_next = s;
    else dev->ready_head[level] = s;
    dev->ready_tail[level] = s;
    atomic_fetch_add(&dev->ready_count, 1);
    mt_spin_unlock(&dev->ready_lock);
}

/* Put a stream on its device's ready list and wake a worker if needed. */
static void push_ready(mt_device *dev, mt_stream *s) {
    enlist_ready(dev, s);
    mt_device_wake(dev, 1);
}

mt_stream *mt_stream_pop_ready(mt_device *dev) {
    if (atomic_load_explicit(&dev->ready_count, memory_order_acquire) == 0) return NULL;
    mt_stream *s = NULL;
    mt_spin_lock(&dev->ready_lock);
    for (int level = MT_NUM_PRIORITIES - 1; level >= 0; level--) {
        s = dev->ready_head[level];
        if (s) {
            dev->ready_head[level] = s->ready_next;
            if (!dev->ready_head[level]) dev->ready_tail[level] = NULL;
            atomic_fetch_sub(&dev->ready_count, 1);
            break;
        }
    }
    unsigned left = atomic_load_explicit(&dev->ready_count, memory_order_relaxed);
    mt_spin_unlock(&dev->ready_lock);
    /* More work than this worker can take: make sure someone else looks. */
    if (s && left > 0) mt_device_wake(dev, 1);
    return s;
}

/* A BLOCKED stream whose wait is satisfied goes back on the ready list. */
static void unblock(mt_stream *s) {
    int expected = MT_SCHED_BLOCKED;
    if (atomic_compare_exchange_strong(&s->sched, &expected, MT_SCHED_QUEUED))
        push_ready(s->dev, s);
}

/* ------------------------------------------------------------------ enqueue */

/* What a queue slot owns: a GRAPH op (which only queues hold) its executable, any other
 * op what op.c releases. */
static void release_queued(mt_op *op) {
    if (op->type == MT_OP_GRAPH) mt_exec_release_launch(op);
    else mt_op_release(op);
}

/* Append `op` to the queue and publish it. With `only_after` other than UINT64_MAX, only if
 * that many ops were ever published (nothing was appended meanwhile): MTIART_NOT_READY,
 * `op` untouched, otherwise. */
static inline mtiart_status append(mt_stream *s, mt_op *op, uint64_t only_after) {
    mt_spin_lock(&s->enqueue_lock);
    if (only_after != UINT64_MAX && s->appended != only_after) {
        mt_spin_unlock(&s->enqueue_lock);
        return MTIART_NOT_READY;
    }
    if (MT_UNLIKELY(s->tail_pos == MT_CHUNK_OPS)) {
        mt_chunk *chunk = atomic_exchange(&s->spare_chunk, NULL);
        if (!chunk) chunk = aligned_alloc(MT_CACHELINE, sizeof *chunk);
        if (!chunk) {
            mt_spin_unlock(&s->enqueue_lock);
            release_queued(op);
            return mt_oom();
        }
        chunk->next = NULL;
        s->tail_chunk->next = chunk;
        s->tail_chunk = chunk;
        s->tail_pos = 0;
    }
    mt_op *slot = &s->tail_chunk->ops[s->tail_pos++];
    /* The whole slot, two cache lines: a copy of fixed size is a few vector moves, where
     * copying only the used part of the inline blob took a call to memcpy. */
    memcpy(slot, op, sizeof *op);
    uint64_t seq = ++s->appended;
    /* Release, not seq_cst: a drainer goes IDLE under this lock (go_idle), so either it sees
     * this op or this producer, whose later load of `sched` follows the lock, sees IDLE. The
     * fence a seq_cst store costs would be paid by every op instead of by each idle. */
    atomic_store_explicit(&s->enqueued, seq, memory_order_release);
    mt_spin_unlock(&s->enqueue_lock);
    return MTIART_SUCCESS;
}

/* The stream, IDLE after a linger that ran out (linger_missed_since), has its next op: its
 * linger budget learns how long after the linger began the op came, so that a producer
 * whose next launch comes a little later than the budget (a host that returns from a wait,
 * then launches again) is waited for next time. Learnt here, where the op is known to have
 * come, rather than when the linger ran out: halving the budget then would keep it at its
 * floor for good, since a linger as short as the floor never sees such an op come. */
static __attribute__((noinline)) void learn_linger_miss(mt_stream *s, uint64_t since) {
    atomic_store_explicit(&s->linger_missed_since, 0, memory_order_relaxed);
    mt_spin_budget_learn(&s->linger_budget, mt_now_ns() - since, mt_linger_ns);
}

/* The drainer hands the stream back (IDLE); what was published by then, which it has to
 * take back if it is more than `consumed`. Under the enqueue lock, which orders it against
 * every append: an op appended after it sees IDLE and schedules the stream (see append). */
static inline uint64_t go_idle(mt_stream *s) {
    mt_spin_lock(&s->enqueue_lock);
    atomic_store_explicit(&s->sched, MT_SCHED_IDLE, memory_order_release);
    uint64_t enqueued = atomic_load_explicit(&s->enqueued, memory_order_relaxed);
    mt_spin_unlock(&s->enqueue_lock);
    return enqueued;
}

/* The stream went from IDLE to taken: an op came. IDLE was stored (release, go_idle) after
 * linger_missed_since, and the caller's successful exchange read it. */
static inline void taken_from_idle(mt_stream *s) {
    uint64_t since = atomic_load_explicit(&s->linger_missed_since, memory_order_relaxed);
    if (MT_UNLIKELY(since)) learn_linger_miss(s, since);
}

/* Put an IDLE stream with published work on its device's ready list (the CAS decides who
 * schedules it when several threads publish at once). */
static inline void schedule_if_idle(mt_stream *s) {
    if (atomic_load(&s->sched) != MT_SCHED_IDLE) return;
    int expected = MT_SCHED_IDLE;
    if (atomic_compare_exchange_strong(&s->sched, &expected, MT_SCHED_QUEUED)) {
        taken_from_idle(s);
        mt_stream_ref(s); /* the scheduling reference */
        push_ready(s->dev, s);
    }
}

static inline mtiart_status enqueue(mt_stream *s, mt_op *op) {
    mtiart_status st = append(s, op, UINT64_MAX);
    if (MT_UNLIKELY(st)) return st;
    schedule_if_idle(s);
    return MTIART_SUCCESS;
}

mtiart_status mt_stream_enqueue(mt_stream *s, mt_op *op) { return enqueue(s, op); }

/* The device buffers an eager op touches lie in live allocations of the stream's device. */
static mtiart_status check_eager_buffers(mt_stream *s, mt_op *op, const mtiart_arg *args,
                                         uint32_t num_args) {
    mt_buffer bufs[MT_MAX_ARGS];
    uint32_t n = mt_op_buffers(op, args, num_args, bufs);
    mtiart_status st = mt_check_buffers(s->dev, bufs, n, "stream", NULL, 0);
    if (MT_UNLIKELY(st)) mt_op_release(op);
    return st;
}

mtiart_status mt_stream_submit(mt_stream *s, mt_op *op, const mtiart_arg *args, uint32_t num_args) {
    mt_capture *capture = atomic_load_explicit(&s->capture, memory_order_acquire);
    if (MT_UNLIKELY(capture != NULL)) {
        /* Checked (and held for the graph) as the node is recorded: one lookup. */
        mtiart_status st = mt_capture_record(s, op, args, num_args);
        if (st != MTIART_ERROR_NOT_CAPTURING) return st;
        /* the capture ended meanwhile: the op runs eagerly */
    }
    if (op->type != MT_OP_KERNEL || num_args) {
        mtiart_status st = check_eager_buffers(s, op, args, num_args);
        if (MT_UNLIKELY(st)) return st;
    }
    return enqueue(s, op);
}

/* ------------------------------------------------------------------ execution */

/* Put the streams parked on event e, whose record just completed, back to work. */
static void unblock_waiters(mt_event *e) {
    mt_stream *ready[16];
    for (size_t n; (n = mt_event_take_ready(e, ready, 16)) != 0;)
        for (size_t i = 0; i < n; i++) unblock(ready[i]);
}

/* An event record ran: complete it and put the streams parked on it back to work. */
static void complete_event(mt_event *e, uint64_t generation) {
    mt_event_complete(e, generation);
    unblock_waiters(e);
}

static bool publish_completed(mt_stream *s, uint64_t consumed);
static void wake_hosts(mt_stream *s);

/* A replay of a graph whose pool is shared begins: false when another graph of the pool
 * is still running and the check refuses it (the stream's sticky error says why). */
static __attribute__((noinline, cold)) bool start_pool_replay(mt_stream *s, mt_op *op) {
    mt_exec *x = op->u.graph.exec;
    if (!mt_exec_starting(x)) return true; /* resumed after a wait: it began already */
    uint32_t seq;
    mt_pool_order *order = mt_exec_pool_order(x, &seq);
    char failure[MT_FAILURE_MAX];
    if (mt_pool_order_enter(order, seq, s->id, failure, sizeof failure)) return true;
    set_sticky(s, MTIART_ERROR_NOT_PERMITTED, "%s", failure);
    return false;
}

/* Run the op at the head of the queue; false when the stream parked on an event. */
static bool run_op(mt_stream *s, mt_op *op) {
    char failure[MT_FAILURE_MAX];
    switch (op->type) {
    case MT_OP_EVENT_RECORD:
        /* The event first: a stream synchronize that returns must find every record it
         * waited for complete (mtiart_stream_synchronize waits for "all work enqueued",
         * and a query of an event recorded last on the stream must then say SUCCESS; with
         * the stream marked first, the host could see it idle before the event completed).
         * The stream's progress is published right after, before anyone is woken, so an
         * event waiter sees the stream idle (record as its last op) all but at once: the
         * wake, a system call in which the worker may be preempted, comes last. */
        mt_event_publish(op->u.event.event, op->u.event.generation);
        if (publish_completed(s, s->consumed + 1)) wake_hosts(s);
        mt_event_wake(op->u.event.event);
        unblock_waiters(op->u.event.event);
        return true;
    case MT_OP_EVENT_WAIT:
        return mt_event_wait_or_park(op->u.event.event, op->u.event.generation, s);
    case MT_OP_GRAPH: {
        if (MT_UNLIKELY(op->u.graph.checks & MT_LAUNCH_POOL_ORDER) && !start_pool_replay(s, op)) {
            complete_event(mt_exec_done_event(op->u.graph.exec), op->u.graph.generation);
            return true;
        }
        for (;;) {
            mt_event *park = NULL;
            uint64_t park_generation = 0;
            mt_running_stream = s;
            int32_t rc =
                mt_exec_run(op, complete_event, &park, &park_generation, failure, sizeof failure);
            mt_running_stream = NULL;
            if (MT_UNLIKELY(rc != 0)) set_sticky(s, MTIART_ERROR_KERNEL_FAILED, "%s", failure);
            if (MT_LIKELY(!park)) break;
            /* A wait node's record is pending and nothing else of the replay can run: the
             * stream parks on the event as an eager wait does, and resumes the replay. */
            if (!mt_event_wait_or_park(park, park_generation, s)) return false;
        }
        if (MT_UNLIKELY(op->u.graph.checks & MT_LAUNCH_POOL_ORDER)) {
            uint32_t seq;
            mt_pool_order_leave(mt_exec_pool_order(op->u.graph.exec, &seq));
        }
        /* Not marked complete early: the op's release (which may free the executable
         * and its pool use) must happen before a synchronize returns. */
        complete_event(mt_exec_done_event(op->u.graph.exec), op->u.graph.generation);
        return true;
    }
    default: {
        mt_running_stream = s; /* names the stream in the jobs the op posts */
        int32_t rc = mt_op_run(s->dev, op, NULL, failure, sizeof failure);
        mt_running_stream = NULL;
        if (MT_UNLIKELY(rc != 0)) set_sticky(s, MTIART_ERROR_KERNEL_FAILED, "%s", failure);
        return true;
    }
    }
}

/* run_op, recorded in the trace. Out of line: the drain loop keeps one test of mt_trace_on. */
static __attribute__((noinline)) bool run_op_traced(mt_stream *s, mt_op *op) {
    uint64_t start = mt_trace_clock();
    if (op->type == MT_OP_EVENT_RECORD) {
        /* In the trace before anyone can see it complete: a host that waited for it and
         * then stops the trace finds it there. */
        mt_trace_op(s->dev->index, s->id, op, start);
        return run_op(s, op);
    }
    if (!run_op(s, op)) return false; /* parked: recorded when it runs again */
    mt_trace_op(s->dev->index, s->id, op, start);
    return true;
}

/* Publish the first `consumed` ops complete; true when a host thread asleep in a wait has
 * reached its target, and the caller is to wake it (wake_hosts). */
static bool publish_completed(mt_stream *s, uint64_t consumed) {
    /* seq_cst store then load: pairs with a host waiter's increment then re-check. Sleepers
     * are woken only when the first of their targets is reached: a host waiting for the
     * last of many queued replays is not woken (taking a core from the worker) by each. */
    atomic_store(&s->completed, consumed);
    bool wake = MT_UNLIKELY(atomic_load(&s->host_waiters) != 0) &&
                mt_counter_should_wake(&s->wake_at, consumed);
    /* after wake_at was cleared: see mt_wait_counter */
    atomic_store_explicit(&s->completed_word, (unsigned)consumed, memory_order_release);
    return wake;
}

static void wake_hosts(mt_stream *s) {
    mt_spin_budget_waking(&s->wait_budget);
    mt_futex_wake(&s->completed_word, INT_MAX);
}

enum linger_result { LINGER_WORK, LINGER_NONE, LINGER_TAKEN };

/* A producer usually enqueues in bursts, or launches and waits: keep the stream for a
 * moment rather than pay for a hand-back and re-schedule per op, for as long as the next
 * op has lately taken to come (the stream's linger budget). Polls at once, then ever more
 * sparsely: a launch that follows a wait is seen within a few tens of nanoseconds, while
 * during a burst each poll, which pulls the producers' line away from them, leaves them
 * time to append several ops. Yields at once when other work is waiting. While it lingers
 * the stream is LINGERING, and a blocking copy may take it over (LINGER_TAKEN: the stream
 * is no longer this worker's). */
static enum linger_result linger_for_work(mt_stream *s, uint64_t consumed, bool *wake) {
    uint64_t budget = mt_spin_budget_ns(&s->linger_budget);
    if (!budget) return LINGER_NONE;
    mt_device *dev = s->dev;
    uint64_t start = 0;
    enum linger_result result = LINGER_NONE;
    bool ran_out = false;
    uint64_t enqueued = consumed;
    unsigned number = (++s->lingers << MT_SCHED_STATE_BITS) & INT_MAX;
    int lingering = (int)(number | MT_SCHED_LINGERING);
    atomic_store(&s->sched, lingering);
    if (*wake) { /* only now: see mt_stream_run */
        wake_hosts(s);
        *wake = false;
    }
    for (unsigned gap = 1;; gap = gap < 32 ? gap * 2 : 48) {
        enqueued = atomic_load_explicit(&s->enqueued, memory_order_acquire);
        if (enqueued != consumed) {
            if (start) mt_spin_budget_learn(&s->linger_budget, mt_now_ns() - start, mt_linger_ns);
            result = LINGER_WORK;
            break;
        }
        if (atomic_load_explicit(&dev->ready_count, memory_order_relaxed) ||
            atomic_load_explicit(&dev->open_jobs, memory_order_relaxed) ||
            atomic_load_explicit(&s->sched, memory_order_relaxed) != lingering)
            break;
        for (unsigned k = 0; k < gap; k++) mt_cpu_relax();
        uint64_t now = mt_now_ns();
        if (!start) start = now;
        else if (now - start > budget) {
            ran_out = true; /* nothing came */
            break;
        }
    }
    int expected = lingering;
    if (!atomic_compare_exchange_strong(&s->sched, &expected, MT_SCHED_RUNNING))
        return LINGER_TAKEN;
    /* the stream's state is this worker's again only now */
    if (result == LINGER_WORK) s->known_enqueued = enqueued;
    /* How far off the next op is, whoever takes the stream from IDLE learns (taken_from_idle).
     * Only now: a blocking copy that took the lingering stream over reads no stamp. */
    if (ran_out) atomic_store_explicit(&s->linger_missed_since, start, memory_order_relaxed);
    return result;
}

/* Run the op at the head of the queue and publish it complete; false when the stream parked
 * on an event (the waker owns it then). *wake: a sleeping host is to be woken (see
 * publish_completed). Only the stream's drainer (RUNNING) calls this. */
static bool run_head(mt_stream *s, bool *wake) {
    if (MT_UNLIKELY(s->head_pos == MT_CHUNK_OPS)) {
        mt_chunk *done = s->head_chunk;
        s->head_chunk = done->next;
        s->head_pos = 0;
        mt_chunk *old = atomic_exchange(&s->spare_chunk, done);
        free(old);
    }
    mt_op *op = &s->head_chunk->ops[s->head_pos];
    if (MT_UNLIKELY(mt_trace_on())) {
        if (!run_op_traced(s, op)) return false;
    } else if (!run_op(s, op)) {
        return false;
    }
    release_queued(op);
    VG_FORGET_OP(op);
    s->head_pos++;
    uint64_t consumed = s->consumed + 1;
    s->consumed = consumed;
    *wake = publish_completed(s, consumed);
    return true;
}

void mt_stream_run(mt_stream *s) {
    atomic_store_explicit(&s->sched, MT_SCHED_RUNNING, memory_order_relaxed);
    /* A host asleep in a wait whose target was reached is woken once the stream can be
     * taken over (lingering or idle) when that was its last op: the host usually goes on
     * with a blocking copy, and where it takes the CPU of the worker that woke it (two
     * CPUs, two workers), it would otherwise find the stream still RUNNING and have to
     * hand its copy to the very worker it preempted. */
    bool wake = false;
    for (unsigned budget = 0;;) {
        uint64_t consumed = s->consumed;
        if (consumed == s->known_enqueued)
            s->known_enqueued = atomic_load_explicit(&s->enqueued, memory_order_acquire);
        if (wake && consumed != s->known_enqueued) {
            wake_hosts(s);
            wake = false;
        }
        enum linger_result linger = LINGER_WORK;
        if (consumed == s->known_enqueued &&
            (linger = linger_for_work(s, consumed, &wake)) != LINGER_WORK) {
            if (linger == LINGER_TAKEN) {
                mt_stream_unref(s); /* the scheduling reference: the taker hands it back */
                return;
            }
            uint64_t enqueued = go_idle(s);
            if (wake) {
                wake_hosts(s); /* the scheduling reference keeps the stream */
                wake = false;
            }
            if (enqueued != consumed) {
                int expected = MT_SCHED_IDLE;
                if (atomic_compare_exchange_strong(&s->sched, &expected, MT_SCHED_RUNNING)) {
                    taken_from_idle(s);
                    continue;
                }
            }
            mt_stream_unref(s); /* the scheduling reference */
            return;
        }
        if (MT_UNLIKELY(++budget > 512)) {
            budget = 0;
            /* Streams waiting for a worker get a turn: this one goes to the back of the
             * list, and this worker takes the list's head next (mt_stream_pop_ready wakes
             * another one for what it leaves behind). With none waiting it runs on: waking a
             * worker for its own stream cost a system call every 512 ops, and on two CPUs
             * the woken worker competed with this one and the producer. */
            if (atomic_load_explicit(&s->dev->ready_count, memory_order_relaxed) != 0) {
                atomic_store(&s->sched, MT_SCHED_QUEUED);
                enlist_ready(s->dev, s);
                return;
            }
        }
        if (!run_head(s, &wake)) return; /* parked on an event; the waker owns it now */
    }
}

/* Run `op` on the calling thread if the stream has nothing pending: MTIART_NOT_READY (op
 * untouched) when it has. The caller claims the stream as a worker does (IDLE or LINGERING
 * -> RUNNING), so work other threads enqueue meanwhile queues behind the op and goes to the
 * workers once it has run. */
static mtiart_status run_inline_if_idle(mt_stream *s, mt_op *op) {
    int expected = atomic_load(&s->sched);
    /* A worker that has just completed the last op is a few instructions from lingering:
     * worth a moment's wait, unless it was preempted there. */
    for (unsigned i = 0; expected == MT_SCHED_RUNNING && i < 256 &&
                         atomic_load(&s->completed) == atomic_load(&s->enqueued);
         i++) {
        mt_cpu_relax();
        expected = atomic_load(&s->sched);
    }
    if ((expected != MT_SCHED_IDLE && MT_SCHED_STATE(expected) != MT_SCHED_LINGERING) ||
        !atomic_compare_exchange_strong(&s->sched, &expected, MT_SCHED_RUNNING))
        return MTIART_NOT_READY;
    if (expected == MT_SCHED_IDLE) taken_from_idle(s);
    /* A producer may have published an op and lost the race to schedule it, or be about to
     * publish one: that op comes first, and it is the workers' to run. */
    mtiart_status st = append(s, op, s->consumed);
    bool wake = false; /* another host waiting for the copy */
    if (st == MTIART_SUCCESS) {
        s->known_enqueued = s->consumed + 1;
        (void)run_head(s, &wake); /* true: only event waits park */
    }
    uint64_t consumed = s->consumed; /* the stream is not this thread's once IDLE */
    uint64_t enqueued = go_idle(s);
    if (wake) wake_hosts(s); /* the caller's pin keeps the stream */
    if (enqueued != consumed) schedule_if_idle(s);
    return st;
}

/* ------------------------------------------------------------------ waiting */

mtiart_status mt_stream_wait_idle(mt_stream *s, bool report, bool help, uint64_t deadline) {
    mtiart_status st = mt_check_may_wait();
    if (st) return st;
    if (!mt_wait_counter(&s->completed, atomic_load(&s->enqueued), &s->completed_word,
                         &s->host_waiters, &s->wake_at, &s->wait_budget, deadline, help ? s : NULL))
        return MTIART_NOT_READY;
    mt_alloc_vg_poll(s->dev);
    return report ? report_sticky(s) : MTIART_SUCCESS;
}

/* mtiart_stream_synchronize[_timeout] */
static mtiart_status stream_synchronize(mtiart_stream stream, uint64_t timeout_ns) {
    LOOKUP_STREAM(s, stream);
    mtiart_status st = mt_check_unsafe(s, NULL);
    if (st) return st;
    return mt_stream_wait_idle(s, true, true, mt_deadline_after(timeout_ns));
}

/* mtiart_device_synchronize[_timeout]. Every stream is waited for before any sticky error
 * is reported, so a wait that times out has reported (cleared) nothing. */
static mtiart_status device_synchronize(int device, uint64_t timeout_ns) {
    LOOKUP_DEVICE(dev, device);
    mtiart_status st = mt_check_unsafe(NULL, NULL);
    if (st || (st = mt_check_may_wait())) return st;
    uint64_t deadline = mt_deadline_after(timeout_ns);
    /* Snapshot the streams (with references) and wait for each outside the list lock. */
    size_t count = 0, cap = 16;
    mt_stream **streams = malloc(cap * sizeof *streams);
    MT_CHECK_ALLOC(streams);
    pthread_mutex_lock(&dev->streams_lock);
    for (mt_stream *s = dev->streams; s; s = s->dev_next) {
        if (count == cap) {
            mt_stream **grown = realloc(streams, cap * 2 * sizeof *streams);
            if (!grown) break;
            streams = grown;
            cap *= 2;
        }
        if (mt_stream_try_ref(s)) streams[count++] = s;
    }
    pthread_mutex_unlock(&dev->streams_lock);
    /* A capturing stream's queue holds only work from before the capture. */
    for (size_t i = 0; i < count && st == MTIART_SUCCESS; i++)
        st = mt_stream_wait_idle(streams[i], false, true, deadline);
    for (size_t i = 0; i < count && st == MTIART_SUCCESS; i++) st = report_sticky(streams[i]);
    for (size_t i = 0; i < count; i++) mt_stream_unref(streams[i]);
    free(streams);
    return st;
}

/* ------------------------------------------------------------------ public API */

MTIART_API mtiart_status mtiart_stream_get_default(int device, mtiart_stream *stream) {
    MT_API_ENTRY();
    LOOKUP_DEVICE(dev, device);
    MT_CHECK_NOT_NULL(stream);
    *stream = (mtiart_stream)(uintptr_t)dev->default_stream->handle;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_stream_create_with_flags(int device, int priority, uint32_t flags,
                                                         mtiart_stream *stream) {
    MT_API_ENTRY();
    LOOKUP_DEVICE(dev, device);
    MT_CHECK_NOT_NULL(stream);
    if (flags & ~(uint32_t)MTIART_STREAM_NON_BLOCKING)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "unknown stream flags 0x%x", flags);
    if (priority > 0) priority = 0;
    if (priority < -(MT_NUM_PRIORITIES - 1)) priority = -(MT_NUM_PRIORITIES - 1);
    mt_stream *s;
    mtiart_status st = stream_new(dev, priority, flags, false, &s);
    if (st) return st;
    *stream = (mtiart_stream)(uintptr_t)s->handle;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_stream_create(int device, int priority, mtiart_stream *stream) {
    MT_API_ENTRY();
    return mtiart_stream_create_with_flags(device, priority, MTIART_STREAM_DEFAULT, stream);
}

MTIART_API mtiart_status mtiart_stream_get_flags(mtiart_stream stream, uint32_t *flags) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    MT_CHECK_NOT_NULL(flags);
    *flags = s->flags;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_stream_destroy(mtiart_stream stream) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    if (s->is_default)
        return mt_set_error(MTIART_ERROR_NOT_PERMITTED,
                            "the default stream of device %d cannot be destroyed", s->dev->index);
    /* Work already enqueued holds the stream until it has run. */
    mtiart_status st = mt_capture_retire_stream(s, &s_pin);
    if (st == MTIART_SUCCESS) {
        atomic_store(&s->destroyed, 1);
        atomic_fetch_add(&s->dev->streams_destroyed, 1);
        mt_alloc_stream_destroyed(s->dev, s->id);
    }
    return st;
}

MTIART_API mtiart_status mtiart_stream_get_device(mtiart_stream stream, int *device) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    MT_CHECK_NOT_NULL(device);
    *device = s->dev->index;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_stream_get_priority(mtiart_stream stream, int *priority) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    MT_CHECK_NOT_NULL(priority);
    *priority = s->priority;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_stream_get_id(mtiart_stream stream, uint64_t *id) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    MT_CHECK_NOT_NULL(id);
    *id = s->id;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_stream_query(mtiart_stream stream) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    /* A query never waits, so it only concerns a capture when this stream captures. */
    if (atomic_load(&s->capture)) {
        mtiart_status st = mt_check_unsafe(s, NULL);
        if (st) return st;
    }
    if (atomic_load(&s->completed) < atomic_load(&s->enqueued)) return MTIART_NOT_READY;
    return report_sticky(s);
}

MTIART_API mtiart_status mtiart_stream_synchronize(mtiart_stream stream) {
    MT_API_ENTRY();
    return stream_synchronize(stream, MT_FOREVER);
}

MTIART_API mtiart_status mtiart_stream_synchronize_timeout(mtiart_stream stream,
                                                           uint64_t timeout_ns) {
    MT_API_ENTRY();
    return stream_synchronize(stream, timeout_ns);
}

MTIART_API mtiart_status mtiart_device_synchronize(int device) {
    MT_API_ENTRY();
    return device_synchronize(device, MT_FOREVER);
}

MTIART_API mtiart_status mtiart_device_synchronize_timeout(int device, uint64_t timeout_ns) {
    MT_API_ENTRY();
    return device_synchronize(device, timeout_ns);
}

/* A launch; `label` (interned, or NULL) names it in traces. */
static inline mtiart_status launch_kernel(mtiart_stream stream, mtiart_kernel_fn kernel,
                                          uint32_t num_blocks, const mtiart_arg *args,
                                          uint32_t num_args, const char *label) {
    LOOKUP_STREAM(s, stream);
    mt_op op;
    mtiart_status st = mt_op_pack_kernel(&op, kernel, num_blocks, args, num_args);
    if (MT_UNLIKELY(st)) return st;
    if (label) op.u.kernel.label = label;
    return mt_stream_submit(s, &op, args, num_args);
}

MTIART_API mtiart_status mtiart_launch_kernel(mtiart_stream stream, mtiart_kernel_fn kernel,
                                              uint32_t num_blocks, const mtiart_arg *args,
                                              uint32_t num_args) {
    MT_API_ENTRY();
    return launch_kernel(stream, kernel, num_blocks, args, num_args, NULL);
}

MTIART_API mtiart_status mtiart_launch_kernel_described(
    mtiart_stream stream, mtiart_kernel_fn kernel, uint32_t num_blocks, const mtiart_arg *args,
    uint32_t num_args, const char *label, const struct mtiart_tensor_desc *const *tensors) {
    MT_API_ENTRY();
    const char *interned = NULL;
    if (label && label[0] && !(interned = mt_intern_label(label))) return mt_oom();
    mt_launch_note note = {tensors, tensors ? num_args : 0};
    const mt_launch_note *outer = mt_current_launch;
    mt_current_launch = &note;
    mtiart_status st = launch_kernel(stream, kernel, num_blocks, args, num_args, interned);
    mt_current_launch = outer;
    return st;
}

MTIART_API mtiart_status mtiart_launch_host_func(mtiart_stream stream, mtiart_host_fn fn,
                                                 void *user_data) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    if (!fn) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "host function is NULL");
    mt_op op = {.type = MT_OP_HOST, .num_blocks = 1};
    op.fn.host = fn;
    op.u.host.user_data = user_data;
    return mt_stream_submit(s, &op, NULL, 0);
}

MTIART_API mtiart_status mtiart_memcpy_async(mtiart_stream stream, void *dst, const void *src,
                                             size_t bytes, mtiart_memcpy_kind kind) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    mt_op op;
    mtiart_status st = mt_op_pack_memcpy(&op, dst, src, bytes, kind);
    if (st || bytes == 0) return st;
    return mt_stream_submit(s, &op, NULL, 0);
}

/* mtiart_memcpy[_timeout] */
static mtiart_status memcpy_and_wait(mtiart_stream stream, void *dst, const void *src, size_t bytes,
                                     mtiart_memcpy_kind kind, uint64_t timeout_ns) {
    LOOKUP_STREAM(s, stream);
    /* Checked before enqueueing so that a refused call leaves nothing behind. */
    mtiart_status st = mt_check_unsafe(s, NULL);
    if (st || (st = mt_check_may_wait())) return st;
    mt_op op;
    if ((st = mt_op_pack_memcpy(&op, dst, src, bytes, kind)) || bytes == 0) return st;
    /* With nothing pending on the stream, the copy runs here: handing it to a worker would
     * cost a wake of the worker and one of this thread, more than a small copy itself. */
    if (atomic_load_explicit(&s->capture, memory_order_acquire) == NULL) {
        if ((st = check_eager_buffers(s, &op, NULL, 0))) return st;
        st = run_inline_if_idle(s, &op);
        if (st == MTIART_SUCCESS) {
            mt_alloc_vg_poll(s->dev);
            return report_sticky(s);
        }
        if (st == MTIART_NOT_READY) st = enqueue(s, &op);
    } else {
        st = mt_stream_submit(s, &op, NULL, 0);
    }
    if (st) return st;
    return mt_stream_wait_idle(s, true, true, mt_deadline_after(timeout_ns));
}

MTIART_API mtiart_status mtiart_memcpy(mtiart_stream stream, void *dst, const void *src,
                                       size_t bytes, mtiart_memcpy_kind kind) {
    MT_API_ENTRY();
    return memcpy_and_wait(stream, dst, src, bytes, kind, MT_FOREVER);
}

MTIART_API mtiart_status mtiart_memcpy_timeout(mtiart_stream stream, void *dst, const void *src,
                                               size_t bytes, mtiart_memcpy_kind kind,
                                               uint64_t timeout_ns) {
    MT_API_ENTRY();
    return memcpy_and_wait(stream, dst, src, bytes, kind, timeout_ns);
}

MTIART_API mtiart_status mtiart_fill_async(mtiart_stream stream, void *dst, const void *pattern,
                                           uint32_t pattern_size, size_t count) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    mt_op op;
    mtiart_status st = mt_op_pack_fill(&op, dst, pattern, pattern_size, count);
    if (st || count == 0) return st;
    return mt_stream_submit(s, &op, NULL, 0);
}

MTIART_API mtiart_status mtiart_memset_async(mtiart_stream stream, void *dst, int value,
                                             size_t bytes) {
    MT_API_ENTRY();
    uint8_t byte = (uint8_t)value;
    return mtiart_fill_async(stream, dst, &byte, 1, bytes);
}
