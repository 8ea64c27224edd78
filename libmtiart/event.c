/*
 * Events. A record enqueues an op that, when a worker reaches it, publishes the record's
 * generation; waiting means waiting for `completed` to reach the generation of the record
 * in question. Streams that wait on an incomplete event park on the event's waiter list
 * and are put back on the ready list by the op that completes it.
 */
#include "internal.h"

#include <limits.h>
#include <stdlib.h>

mt_event *mt_event_new(uint32_t flags) {
    mt_event *e =
        aligned_alloc(MT_CACHELINE, (sizeof *e + MT_CACHELINE - 1) / MT_CACHELINE * MT_CACHELINE);
    if (!e) return NULL;
    memset(e, 0, sizeof *e);
    atomic_init(&e->refcount, 1);
    e->flags = flags;
    mt_spin_budget_init(&e->wait_budget, (flags & MTIART_EVENT_BLOCKING_SYNC) ? 0 : mt_spin_ns);
    return e;
}

void mt_event_ref(mt_event *e) { atomic_fetch_add_explicit(&e->refcount, 1, memory_order_relaxed); }

void mt_event_unref(mt_event *e) {
    if (atomic_fetch_sub_explicit(&e->refcount, 1, memory_order_acq_rel) != 1) return;
    free(e->waiters);
    free(e->capture_deps);
    free(e);
}

void mt_event_complete(mt_event *e, uint64_t generation) {
    mt_event_publish(e, generation);
    mt_event_wake(e);
}

void mt_event_publish(mt_event *e, uint64_t generation) {
    /* Records complete in order on one stream, but two streams may record the same event;
     * the newest generation wins, as with CUDA's "most recent record". */
    if (e->flags & MTIART_EVENT_TIMING) {
        /* The timestamp belongs to the completed generation: an older record completing
         * late must not overwrite it. Taken under the lock together with the completed
         * store, so elapsed_time never pairs a generation with another's time. */
        uint64_t now = mt_now_ns();
        mt_spin_lock(&e->lock);
        if (atomic_load(&e->completed) < generation) {
            e->timestamp_ns = now;
            atomic_store(&e->completed, generation);
        }
        mt_spin_unlock(&e->lock);
    } else {
        uint64_t current = atomic_load(&e->completed);
        while (current < generation &&
               !atomic_compare_exchange_weak(&e->completed, &current, generation)) {}
    }
    atomic_store(&e->completed_word, (unsigned)generation);
}

void mt_event_wake(mt_event *e) {
    if (atomic_load(&e->host_waiters)) {
        mt_spin_budget_waking(&e->wait_budget);
        mt_futex_wake(&e->completed_word, INT_MAX);
    }
}

size_t mt_event_take_ready(mt_event *e, mt_stream **out, size_t cap) {
    /* Nobody parked (most records): no lock. The caller's seq_cst update of `completed`
     * comes before this seq_cst load, and a parking stream publishes itself in
     * num_waiters before it re-reads `completed` (mt_event_wait_or_park): either it sees
     * this record complete, or this load sees it parked. */
    if (atomic_load(&e->num_waiters) == 0) return 0;
    /* Waiters of different generations can be interleaved (a re-recorded event), so the
     * whole list is scanned: an unsatisfied waiter must not hide satisfied ones behind it
     * (they would stay parked until some later record completes, or forever). */
    mt_spin_lock(&e->lock);
    size_t taken = 0, kept = 0, n = atomic_load_explicit(&e->num_waiters, memory_order_relaxed);
    uint64_t done = atomic_load(&e->completed);
    for (size_t i = 0; i < n; i++) {
        if (e->waiters[i].generation <= done && taken < cap) out[taken++] = e->waiters[i].stream;
        else e->waiters[kept++] = e->waiters[i];
    }
    atomic_store(&e->num_waiters, kept);
    mt_spin_unlock(&e->lock);
    return taken;
}

bool mt_event_wait_or_park(mt_event *e, uint64_t generation, mt_stream *s) {
    if (atomic_load(&e->completed) >= generation) return true;
    mt_spin_lock(&e->lock);
    if (atomic_load(&e->completed) >= generation) {
        mt_spin_unlock(&e->lock);
        return true;
    }
    size_t n = atomic_load_explicit(&e->num_waiters, memory_order_relaxed);
    if (n == e->cap_waiters) {
        size_t cap = e->cap_waiters ? e->cap_waiters * 2 : 4;
        mt_event_waiter *grown = realloc(e->waiters, cap * sizeof *grown);
        if (!grown) {
            /* Cannot park: wait on this worker instead (correct, merely wasteful). */
            mt_spin_unlock(&e->lock);
            mt_wait_counter(&e->completed, generation, &e->completed_word, &e->host_waiters, NULL,
                            &e->wait_budget, MT_FOREVER, NULL);
            return true;
        }
        e->waiters = grown;
        e->cap_waiters = cap;
    }
    e->waiters[n] = (mt_event_waiter){s, generation};
    atomic_store(&s->sched, MT_SCHED_BLOCKED);
    /* Parked first, then the re-check (see mt_event_take_ready): a completion that did
     * not see this waiter is seen here, and the waiter withdrawn. */
    atomic_store(&e->num_waiters, n + 1);
    if (atomic_load(&e->completed) >= generation) {
        atomic_store(&e->num_waiters, n);
        atomic_store(&s->sched, MT_SCHED_RUNNING);
        mt_spin_unlock(&e->lock);
        return true;
    }
    mt_spin_unlock(&e->lock);
    return false;
}

bool mt_event_host_wait(mt_event *e, uint64_t generation, uint64_t deadline) {
    /* A blocking-sync event has a budget of 0: its waiters sleep at once. */
    return mt_wait_counter(&e->completed, generation, &e->completed_word, &e->host_waiters, NULL,
                           &e->wait_budget, deadline, NULL);
}

static void release_event(void *e) { mt_event_unref(e); }

MTIART_API mtiart_status mtiart_event_create(uint32_t flags, mtiart_event *event) {
    MT_API_ENTRY();
    MT_INIT_OR_RETURN();
    MT_CHECK_NOT_NULL(event);
    if (flags & ~(uint32_t)(MTIART_EVENT_TIMING | MTIART_EVENT_BLOCKING_SYNC))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "unknown event flags 0x%x", flags);
    mt_event *e = mt_event_new(flags);
    MT_CHECK_ALLOC(e);
    mtiart_status st = mt_handle_register(e, MT_KIND_EVENT, release_event, &e->handle);
    if (st) return st;
    *event = (mtiart_event)(uintptr_t)e->handle;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_event_destroy(mtiart_event event) {
    MT_API_ENTRY();
    LOOKUP_EVENT(e, event);
    if (!mt_handle_retire(&e_pin))
        return mt_set_error(MTIART_ERROR_INVALID_HANDLE, "event destroyed concurrently");
    /* Pending records and waits hold their own references. */
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_event_record_with_flags(mtiart_event event, mtiart_stream stream,
                                                        uint32_t flags) {
    MT_API_ENTRY();
    LOOKUP_EVENT(e, event);
    LOOKUP_STREAM(s, stream);
    if (flags & ~(uint32_t)MTIART_EVENT_RECORD_EXTERNAL)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "unknown event record flags 0x%x", flags);
    if (atomic_load(&s->capture)) {
        mtiart_status st = mt_capture_event_record(s, e, flags & MTIART_EVENT_RECORD_EXTERNAL);
        if (st != MTIART_ERROR_NOT_CAPTURING) return st;
        /* the capture ended meanwhile: an eager record */
    }
    mt_op op = {.type = MT_OP_EVENT_RECORD, .num_blocks = 1};
    /* The generation is reserved, and published in `recorded` only once the op is in the
     * queue: a wait made meanwhile on another thread must not refer to a record that is
     * not enqueued yet (on the same stream it would wait for itself). Straight into the
     * queue: a capture begun since the check above comes after this record. */
    uint64_t generation = atomic_fetch_add(&e->reserved, 1) + 1;
    e->capture = NULL;
    mt_event_ref(e);
    op.u.event.event = e;
    op.u.event.generation = generation;
    mtiart_status st = mt_stream_enqueue(s, &op);
    if (st) return st;
    mt_event_publish_record(e, generation);
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_event_record(mtiart_event event, mtiart_stream stream) {
    MT_API_ENTRY();
    return mtiart_event_record_with_flags(event, stream, MTIART_EVENT_RECORD_DEFAULT);
}

void mt_event_publish_record(mt_event *e, uint64_t generation) {
    /* Records of one event from several threads race as in CUDA: the newest wins. */
    uint64_t latest = atomic_load(&e->recorded);
    while (latest < generation &&
           !atomic_compare_exchange_weak(&e->recorded, &latest, generation)) {}
}

MTIART_API mtiart_status mtiart_stream_wait_event(mtiart_stream stream, mtiart_event event) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    LOOKUP_EVENT(e, event);
    if (e->capture || atomic_load(&s->capture)) return mt_capture_event_wait(s, &s_pin, e);
    return mt_stream_enqueue_wait(s, e, atomic_load(&e->recorded));
}

mtiart_status mt_stream_enqueue_wait(mt_stream *s, mt_event *e, uint64_t generation) {
    if (generation == 0 || atomic_load(&e->completed) >= generation) return MTIART_SUCCESS;
    mt_op op = {.type = MT_OP_EVENT_WAIT, .num_blocks = 1};
    mt_event_ref(e);
    op.u.event.event = e;
    op.u.event.generation = generation;
    return mt_stream_enqueue(s, &op);
}

MTIART_API mtiart_status mtiart_event_query(mtiart_event event) {
    MT_API_ENTRY();
    LOOKUP_EVENT(e, event);
    /* A query never waits, so it can only disturb a capture that recorded this event. */
    if (e->capture) {
        mtiart_status st = mt_check_unsafe(NULL, e);
        if (st) return st;
    }
    return atomic_load(&e->completed) >= atomic_load(&e->recorded) ? MTIART_SUCCESS
                                                                   : MTIART_NOT_READY;
}

/* mtiart_event_synchronize[_timeout] */
static mtiart_status event_synchronize(mtiart_event event, uint64_t timeout_ns) {
    LOOKUP_EVENT(e, event);
    mtiart_status st = mt_check_unsafe(NULL, e);
    if (st || (st = mt_check_may_wait())) return st;
    uint64_t generation = atomic_load(&e->recorded);
    return mt_event_host_wait(e, generation, mt_deadline_after(timeout_ns)) ? MTIART_SUCCESS
                                                                            : MTIART_NOT_READY;
}

MTIART_API mtiart_status mtiart_event_synchronize(mtiart_event event) {
    MT_API_ENTRY();
    return event_synchronize(event, MT_FOREVER);
}

MTIART_API mtiart_status mtiart_event_synchronize_timeout(mtiart_event event, uint64_t timeout_ns) {
    MT_API_ENTRY();
    return event_synchronize(event, timeout_ns);
}

/* The timestamp of a timing event's record `generation`, if that record has completed. Read
 * under the lock that mt_event_complete writes it under (a worker may be completing a
 * newer record right now). */
static bool completed_time(mt_event *e, uint64_t generation, uint64_t *ns) {
    mt_spin_lock(&e->lock);
    bool done = atomic_load(&e->completed) >= generation;
    *ns = e->timestamp_ns;
    mt_spin_unlock(&e->lock);
    return done;
}

MTIART_API mtiart_status mtiart_event_elapsed_time(mtiart_event start, mtiart_event end,
                                                   float *milliseconds) {
    MT_API_ENTRY();
    LOOKUP_EVENT(a, start);
    LOOKUP_EVENT(b, end);
    MT_CHECK_NOT_NULL(milliseconds);
    if (!(a->flags & MTIART_EVENT_TIMING) || !(b->flags & MTIART_EVENT_TIMING))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "elapsed time needs both events created with MTIART_EVENT_TIMING");
    uint64_t ra = atomic_load(&a->recorded), rb = atomic_load(&b->recorded);
    if (ra == 0 || rb == 0)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "elapsed time needs both events to have been recorded");
    uint64_t ta, tb;
    if (!completed_time(a, ra, &ta) || !completed_time(b, rb, &tb))
        return mt_set_error(MTIART_NOT_READY, "an event has not completed yet");
    *milliseconds = (float)(((double)tb - (double)ta) / 1e6);
    return MTIART_SUCCESS;
}
