/* Events: record/query/synchronize, cross-stream waits, never-recorded events, timing,
 * destroy while a wait is pending, re-recording (most recent record), and many waiting
 * streams on a single worker.
 *
 * The program runs every case twice: once with the default worker count, then in a child
 * process of itself that sets MTIART_NUM_WORKERS=1 before its first libmtiart call (a
 * stream blocked on an event must never hold the only worker). */
#include <spawn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rt_helpers.h"

extern char **environ;

static int g_workers;

static void test_record_query_sync(void) {
    mtiart_stream s;
    mtiart_event e;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_event_create(MTIART_EVENT_DEFAULT, &e));
    /* Never recorded: complete. */
    CHECK_OK(mtiart_event_query(e));
    CHECK_OK(mtiart_event_synchronize(e));
    gate g = {0};
    launch_gate(s, &g);
    CHECK_OK(mtiart_event_record(e, s));
    CHECK_STATUS(mtiart_event_query(e), MTIART_NOT_READY);
    atomic_store(&g.open, 1);
    CHECK_OK(mtiart_event_synchronize(e));
    CHECK_OK(mtiart_event_query(e));
    /* Record on an idle stream completes promptly. */
    CHECK_OK(mtiart_event_record(e, s));
    CHECK_OK(mtiart_event_synchronize(e));
    CHECK_OK(mtiart_event_query(e));
    /* Blocking-sync events behave the same. */
    mtiart_event eb;
    CHECK_OK(mtiart_event_create(MTIART_EVENT_BLOCKING_SYNC, &eb));
    double ms = 20;
    CHECK_OK(mtiart_launch_host_func(s, h_sleep, &ms));
    CHECK_OK(mtiart_event_record(eb, s));
    double t0 = now_ms();
    CHECK_OK(mtiart_event_synchronize(eb));
    CHECK(now_ms() - t0 >= 10);
    CHECK_OK(mtiart_event_query(eb));
    CHECK_OK(mtiart_event_destroy(eb));
    /* Recorded on the default stream. */
    mtiart_stream def;
    CHECK_OK(mtiart_stream_get_default(0, &def));
    CHECK_OK(mtiart_event_record(e, def));
    CHECK_OK(mtiart_event_synchronize(e));
    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* A synchronize of the stream finds the events it recorded complete (the record is work
 * of the stream), every time. */
static void test_sync_implies_recorded(void) {
    mtiart_stream s;
    mtiart_event e, t;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_event_create(0, &e));
    CHECK_OK(mtiart_event_create(MTIART_EVENT_TIMING, &t));
    atomic_long counter = 0;
    int bad = 0;
    for (int i = 0; i < 3000; i++) {
        launch_count(s, &counter);
        CHECK_OK(mtiart_event_record(i % 2 ? e : t, s));
        CHECK_OK(mtiart_stream_synchronize(s));
        if (mtiart_event_query(i % 2 ? e : t) != MTIART_SUCCESS) bad++;
    }
    CHECK(bad == 0);
    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_event_destroy(t));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* B waits on an event recorded on A after slow work: B's work runs after A's. */
typedef struct two_step {
    atomic_int a_done;
    atomic_int b_saw_a;
} two_step;

static int32_t h_a_work(void *user) {
    two_step *t = user;
    sleep_ms(40);
    atomic_store(&t->a_done, 1);
    return 0;
}

static int32_t h_b_work(void *user) {
    two_step *t = user;
    atomic_store(&t->b_saw_a, atomic_load(&t->a_done) ? 1 : -1);
    return 0;
}

static void test_cross_stream_wait(void) {
    mtiart_stream a, b;
    mtiart_event e;
    CHECK_OK(mtiart_stream_create(0, 0, &a));
    CHECK_OK(mtiart_stream_create(0, 0, &b));
    CHECK_OK(mtiart_event_create(0, &e));
    for (int round = 0; round < 3; round++) {
        two_step t = {0};
        CHECK_OK(mtiart_launch_host_func(a, h_a_work, &t));
        CHECK_OK(mtiart_event_record(e, a));
        CHECK_OK(mtiart_stream_wait_event(b, e));
        CHECK_OK(mtiart_launch_host_func(b, h_b_work, &t));
        CHECK_OK(mtiart_stream_synchronize(b));
        CHECK(atomic_load(&t.b_saw_a) == 1);
        CHECK_OK(mtiart_stream_synchronize(a));
    }
    /* With a gate: B stays blocked while A is held, and runs after it is released. */
    gate g = {0};
    atomic_long counter = 0;
    launch_gate(a, &g);
    CHECK_OK(mtiart_event_record(e, a));
    CHECK_OK(mtiart_stream_wait_event(b, e));
    launch_count(b, &counter);
    sleep_ms(30);
    CHECK(atomic_load(&counter) == 0);
    CHECK_STATUS(mtiart_stream_query(b), MTIART_NOT_READY);
    /* Work on a third stream is not held up by the blocked one (even with one worker). */
    mtiart_stream c;
    CHECK_OK(mtiart_stream_create(0, 0, &c));
    atomic_long other = 0;
    launch_count(c, &other);
    if (g_workers > 1) {
        CHECK_OK(sync_with_timeout(c, 5000));
        CHECK(atomic_load(&other) == 1);
    }
    atomic_store(&g.open, 1);
    CHECK_OK(sync_with_timeout(b, 10000));
    CHECK(atomic_load(&counter) == 1);
    CHECK_OK(mtiart_stream_synchronize(c));
    CHECK(atomic_load(&other) == 1);
    /* A wait on an event whose record is already complete is a no-op. */
    CHECK_OK(mtiart_stream_wait_event(b, e));
    launch_count(b, &counter);
    CHECK_OK(mtiart_stream_synchronize(b));
    CHECK(atomic_load(&counter) == 2);
    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_stream_destroy(a));
    CHECK_OK(mtiart_stream_destroy(b));
    CHECK_OK(mtiart_stream_destroy(c));
}

static void test_wait_never_recorded(void) {
    mtiart_stream a, b;
    mtiart_event e;
    CHECK_OK(mtiart_stream_create(0, 0, &a));
    CHECK_OK(mtiart_stream_create(0, 0, &b));
    CHECK_OK(mtiart_event_create(0, &e));
    gate g = {0};
    launch_gate(a, &g); /* unrelated busy stream */
    atomic_long counter = 0;
    CHECK_OK(mtiart_stream_wait_event(b, e));
    launch_count(b, &counter);
    if (g_workers > 1) {
        CHECK_OK(sync_with_timeout(b, 5000));
        CHECK(atomic_load(&counter) == 1);
    }
    /* The wait binds to the records made before it: a later record does not matter. */
    CHECK_OK(mtiart_event_record(e, a));
    if (g_workers > 1) {
        launch_count(b, &counter);
        CHECK_OK(sync_with_timeout(b, 5000));
        CHECK(atomic_load(&counter) == 2);
    }
    atomic_store(&g.open, 1);
    CHECK_OK(mtiart_stream_synchronize(a));
    CHECK_OK(mtiart_stream_synchronize(b));
    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_stream_destroy(a));
    CHECK_OK(mtiart_stream_destroy(b));
}

static void test_timing(void) {
    mtiart_stream s;
    mtiart_event t0, t1, plain;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_event_create(MTIART_EVENT_TIMING, &t0));
    CHECK_OK(mtiart_event_create(MTIART_EVENT_TIMING | MTIART_EVENT_BLOCKING_SYNC, &t1));
    CHECK_OK(mtiart_event_create(0, &plain));
    float ms = -1;
    /* Not recorded yet */
    CHECK_STATUS(mtiart_event_elapsed_time(t0, t1, &ms), MTIART_ERROR_INVALID_VALUE);
    double sleep = 30;
    CHECK_OK(mtiart_event_record(t0, s));
    CHECK_OK(mtiart_launch_host_func(s, h_sleep, &sleep));
    CHECK_OK(mtiart_event_record(t1, s));
    CHECK_OK(mtiart_event_record(plain, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_event_elapsed_time(t0, t1, &ms));
    CHECK(ms >= 29.5f && ms < 5000.0f);
    CHECK_OK(mtiart_event_elapsed_time(t1, t0, &ms));
    CHECK(ms <= -29.5f);
    CHECK_OK(mtiart_event_elapsed_time(t0, t0, &ms));
    CHECK(ms == 0.0f);
    /* Non-timing events refuse. */
    ms = 123;
    CHECK_STATUS(mtiart_event_elapsed_time(t0, plain, &ms), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_event_elapsed_time(plain, t1, &ms), MTIART_ERROR_INVALID_VALUE);
    CHECK(ms == 123);
    /* A record that has not completed: not ready. */
    gate g = {0};
    launch_gate(s, &g);
    CHECK_OK(mtiart_event_record(t1, s));
    CHECK_STATUS(mtiart_event_elapsed_time(t0, t1, &ms), MTIART_NOT_READY);
    atomic_store(&g.open, 1);
    CHECK_OK(mtiart_event_synchronize(t1));
    CHECK_OK(mtiart_event_elapsed_time(t0, t1, &ms));
    CHECK(ms >= 29.5f);
    /* Timing across two streams. */
    mtiart_stream s2;
    CHECK_OK(mtiart_stream_create(0, 0, &s2));
    CHECK_OK(mtiart_event_record(t0, s));
    CHECK_OK(mtiart_stream_wait_event(s2, t0));
    sleep = 15;
    CHECK_OK(mtiart_launch_host_func(s2, h_sleep, &sleep));
    CHECK_OK(mtiart_event_record(t1, s2));
    CHECK_OK(mtiart_event_synchronize(t1));
    CHECK_OK(mtiart_event_elapsed_time(t0, t1, &ms));
    CHECK(ms >= 14.5f);
    /* The timestamp is the most recent record's: an older record of the same event that
     * completes later must not move it. */
    if (g_workers > 1) {
        mtiart_stream slow;
        CHECK_OK(mtiart_stream_create(0, 0, &slow));
        gate g3 = {0};
        CHECK_OK(mtiart_event_record(t0, s2));
        launch_gate(slow, &g3);
        CHECK_OK(mtiart_event_record(t1, slow)); /* older record, held */
        sleep = 20;
        CHECK_OK(mtiart_launch_host_func(s2, h_sleep, &sleep));
        CHECK_OK(mtiart_event_record(t1, s2)); /* most recent record */
        CHECK_OK(mtiart_stream_synchronize(s2));
        CHECK_OK(mtiart_event_query(t1));
        float first = -1, second = -1;
        CHECK_OK(mtiart_event_elapsed_time(t0, t1, &first));
        CHECK(first >= 19.5f);
        sleep_ms(40);
        atomic_store(&g3.open, 1);
        CHECK_OK(mtiart_stream_synchronize(slow));
        CHECK_OK(mtiart_event_elapsed_time(t0, t1, &second));
        CHECK(second == first);
        CHECK_OK(mtiart_stream_destroy(slow));
    }
    CHECK_OK(mtiart_event_destroy(t0));
    CHECK_OK(mtiart_event_destroy(t1));
    CHECK_OK(mtiart_event_destroy(plain));
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_OK(mtiart_stream_destroy(s2));
}

static void test_destroy_while_waited(void) {
    mtiart_stream a, b;
    CHECK_OK(mtiart_stream_create(0, 0, &a));
    CHECK_OK(mtiart_stream_create(0, 0, &b));
    for (int variant = 0; variant < 3; variant++) {
        mtiart_event e;
        CHECK_OK(mtiart_event_create(variant == 2 ? MTIART_EVENT_TIMING : 0, &e));
        gate g = {0};
        two_step t = {0};
        launch_gate(a, &g);
        CHECK_OK(mtiart_launch_host_func(a, h_a_work, &t));
        CHECK_OK(mtiart_event_record(e, a));
        CHECK_OK(mtiart_stream_wait_event(b, e));
        CHECK_OK(mtiart_launch_host_func(b, h_b_work, &t));
        if (variant == 1) sleep_ms(20); /* let b park on the event first */
        CHECK_OK(mtiart_event_destroy(e));
        CHECK_STATUS(mtiart_event_query(e), MTIART_ERROR_INVALID_HANDLE);
        if (variant == 2) CHECK_OK(mtiart_stream_destroy(b)); /* the waiter goes too */
        atomic_store(&g.open, 1);
        if (variant == 2) {
            CHECK_OK(mtiart_device_synchronize(0));
            CHECK_OK(mtiart_stream_create(0, 0, &b));
        } else {
            CHECK_OK(sync_with_timeout(b, 10000));
        }
        CHECK(atomic_load(&t.b_saw_a) == 1);
        CHECK_OK(mtiart_stream_synchronize(a));
    }
    CHECK_OK(mtiart_stream_destroy(a));
    CHECK_OK(mtiart_stream_destroy(b));
}

/* The most recent record counts, for waits and queries. */
static void test_rerecord(void) {
    mtiart_stream slow, fast, waiter;
    mtiart_event e;
    CHECK_OK(mtiart_stream_create(0, 0, &slow));
    CHECK_OK(mtiart_stream_create(0, 0, &fast));
    CHECK_OK(mtiart_stream_create(0, 0, &waiter));
    CHECK_OK(mtiart_event_create(0, &e));
    atomic_long counter = 0;

    /* Record on a held stream, then again on a free one: a wait made now only needs the
     * second record. (Needs a second worker while the gate holds one.) */
    gate g = {0};
    launch_gate(slow, &g);
    CHECK_OK(mtiart_event_record(e, slow));
    CHECK_STATUS(mtiart_event_query(e), MTIART_NOT_READY);
    CHECK_OK(mtiart_event_record(e, fast));
    CHECK_OK(mtiart_stream_wait_event(waiter, e));
    launch_count(waiter, &counter);
    if (g_workers > 1) {
        CHECK_OK(sync_with_timeout(waiter, 5000));
        CHECK(atomic_load(&counter) == 1);
        CHECK_OK(mtiart_event_synchronize(e));
        CHECK_OK(mtiart_event_query(e));
    }
    atomic_store(&g.open, 1);
    CHECK_OK(mtiart_stream_synchronize(slow));
    CHECK_OK(mtiart_stream_synchronize(waiter));

    /* The reverse: a complete record, then a pending one. The wait follows the latter. */
    CHECK_OK(mtiart_event_record(e, fast));
    CHECK_OK(mtiart_stream_synchronize(fast));
    gate g2 = {0};
    launch_gate(slow, &g2);
    CHECK_OK(mtiart_event_record(e, slow));
    CHECK_STATUS(mtiart_event_query(e), MTIART_NOT_READY);
    CHECK_OK(mtiart_stream_wait_event(waiter, e));
    launch_count(waiter, &counter);
    sleep_ms(20);
    CHECK(atomic_load(&counter) == 1);
    atomic_store(&g2.open, 1);
    CHECK_OK(sync_with_timeout(waiter, 10000));
    CHECK(atomic_load(&counter) == 2);
    CHECK_OK(mtiart_event_query(e));

    /* Re-recording on the same stream many times, with waits in between. */
    for (int i = 0; i < 200; i++) {
        launch_count(slow, &counter);
        CHECK_OK(mtiart_event_record(e, slow));
        CHECK_OK(mtiart_stream_wait_event(waiter, e));
        launch_count(waiter, &counter);
    }
    CHECK_OK(mtiart_stream_synchronize(waiter));
    CHECK(atomic_load(&counter) == 402);
    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_stream_destroy(slow));
    CHECK_OK(mtiart_stream_destroy(fast));
    CHECK_OK(mtiart_stream_destroy(waiter));
}

/* Ping-pong between two streams through two events, many rounds. */
typedef struct pingpong {
    int64_t value;
    int bad;
} pingpong;

static int32_t h_pp_a(void *user) {
    pingpong *p = user;
    if (p->value % 2 != 0) p->bad++;
    p->value++;
    return 0;
}

static int32_t h_pp_b(void *user) {
    pingpong *p = user;
    if (p->value % 2 != 1) p->bad++;
    p->value++;
    return 0;
}

static void test_ping_pong(void) {
    mtiart_stream a, b;
    mtiart_event ea, eb;
    CHECK_OK(mtiart_stream_create(0, 0, &a));
    CHECK_OK(mtiart_stream_create(0, -1, &b));
    CHECK_OK(mtiart_event_create(0, &ea));
    CHECK_OK(mtiart_event_create(0, &eb));
    pingpong p = {0, 0};
    for (int i = 0; i < 500; i++) {
        CHECK_OK(mtiart_stream_wait_event(a, eb));
        CHECK_OK(mtiart_launch_host_func(a, h_pp_a, &p));
        CHECK_OK(mtiart_event_record(ea, a));
        CHECK_OK(mtiart_stream_wait_event(b, ea));
        CHECK_OK(mtiart_launch_host_func(b, h_pp_b, &p));
        CHECK_OK(mtiart_event_record(eb, b));
    }
    CHECK_OK(sync_with_timeout(a, 20000));
    CHECK_OK(sync_with_timeout(b, 20000));
    CHECK(p.value == 1000);
    CHECK(p.bad == 0);
    CHECK_OK(mtiart_event_destroy(ea));
    CHECK_OK(mtiart_event_destroy(eb));
    CHECK_OK(mtiart_stream_destroy(a));
    CHECK_OK(mtiart_stream_destroy(b));
}

/* Many streams wait on one event and on each other; with one worker nothing deadlocks. */
#define MANY 24

static void test_many_waiters(void) {
    mtiart_stream gate_stream, s[MANY];
    mtiart_event e, chain[MANY];
    CHECK_OK(mtiart_stream_create(0, 0, &gate_stream));
    CHECK_OK(mtiart_event_create(0, &e));
    for (int i = 0; i < MANY; i++) {
        CHECK_OK(mtiart_stream_create(0, -(i % 4), &s[i]));
        CHECK_OK(mtiart_event_create(0, &chain[i]));
    }
    atomic_long counter = 0;
    double ms = 20;
    CHECK_OK(mtiart_launch_host_func(gate_stream, h_sleep, &ms));
    CHECK_OK(mtiart_event_record(e, gate_stream));
    order_log *log = calloc(1, sizeof *log);
    log_entry entries[MANY];
    /* Stream i waits for e and for stream i-1 (a wait binds to the records made before
     * it), so they run strictly in order. */
    for (int i = 0; i < MANY; i++) {
        CHECK_OK(mtiart_stream_wait_event(s[i], e));
        if (i > 0) CHECK_OK(mtiart_stream_wait_event(s[i], chain[i - 1]));
        entries[i] = (log_entry){log, i};
        CHECK_OK(mtiart_launch_host_func(s[i], h_log, &entries[i]));
        launch_count(s[i], &counter);
        CHECK_OK(mtiart_event_record(chain[i], s[i]));
    }
    CHECK_OK(sync_with_timeout(s[MANY - 1], 20000));
    CHECK(atomic_load(&log->n) == MANY);
    for (int i = 0; i < MANY && i < atomic_load(&log->n); i++) CHECK(log->v[i] == i);
    CHECK_OK(mtiart_device_synchronize(0));
    CHECK(atomic_load(&counter) == MANY);

    /* Fan-out: every stream waits on one held event; fan-in: one stream waits on all. */
    gate g = {0};
    launch_gate(gate_stream, &g);
    CHECK_OK(mtiart_event_record(e, gate_stream));
    for (int i = 0; i < MANY; i++) {
        CHECK_OK(mtiart_stream_wait_event(s[i], e));
        launch_count(s[i], &counter);
        CHECK_OK(mtiart_event_record(chain[i], s[i]));
        CHECK_OK(mtiart_stream_wait_event(gate_stream, chain[i]));
    }
    launch_count(gate_stream, &counter);
    sleep_ms(20);
    CHECK(atomic_load(&counter) == MANY);
    atomic_store(&g.open, 1);
    CHECK_OK(sync_with_timeout(gate_stream, 20000));
    CHECK(atomic_load(&counter) == 2 * MANY + 1);
    CHECK_OK(mtiart_device_synchronize(0));
    free(log);
    for (int i = 0; i < MANY; i++) {
        CHECK_OK(mtiart_event_destroy(chain[i]));
        CHECK_OK(mtiart_stream_destroy(s[i]));
    }
    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_stream_destroy(gate_stream));
}

/* More than a handful of streams parked on one event with different generations: each
 * must be released as soon as the record it waits for completes. Parking order wanted on
 * event e: S[0..N) (first record), t (second record), late (first record). */
static void test_mixed_generation_waiters(void) {
    enum { N = 16 }; /* exactly as many as the runtime wakes in one pass */
    mtiart_stream g_stream, t_stream, late, s[N];
    mtiart_event e, f;
    CHECK_OK(mtiart_stream_create(0, 0, &g_stream));
    CHECK_OK(mtiart_stream_create(0, 0, &t_stream));
    CHECK_OK(mtiart_stream_create(0, 0, &late));
    CHECK_OK(mtiart_event_create(0, &e));
    CHECK_OK(mtiart_event_create(0, &f));
    gate g1 = {0}, g2 = {0};
    atomic_long counter = 0, late_counter = 0, t_counter = 0;
    double ms = 60;
    /* g_stream: gate1, record f, sleep, record e (first), gate2, record e (second) */
    launch_gate(g_stream, &g1);
    CHECK_OK(mtiart_event_record(f, g_stream));
    CHECK_OK(mtiart_launch_host_func(g_stream, h_sleep, &ms));
    CHECK_OK(mtiart_event_record(e, g_stream));
    launch_gate(g_stream, &g2);
    for (int i = 0; i < N; i++) {
        CHECK_OK(mtiart_stream_create(0, 0, &s[i]));
        CHECK_OK(mtiart_stream_wait_event(s[i], e)); /* first record */
        launch_count(s[i], &counter);
    }
    CHECK_OK(mtiart_stream_wait_event(late, f));
    CHECK_OK(mtiart_stream_wait_event(late, e)); /* first record */
    launch_count(late, &late_counter);
    CHECK_OK(mtiart_event_record(e, g_stream)); /* second record */
    CHECK_OK(mtiart_stream_wait_event(t_stream, e));
    launch_count(t_stream, &t_counter);
    sleep_ms(30);              /* s[] and t_stream park on e, `late` on f */
    atomic_store(&g1.open, 1); /* f completes; `late` parks on e during the sleep */
    if (g_workers >= 2) {
        /* g_stream now holds one worker in gate2; the first record of e is complete. */
        CHECK(WAIT_UNTIL(atomic_load(&counter) == N && atomic_load(&late_counter) == 1, 5000));
        CHECK(atomic_load(&counter) == N);
        CHECK(atomic_load(&late_counter) == 1);
        CHECK(atomic_load(&t_counter) == 0);
    }
    atomic_store(&g2.open, 1);
    CHECK_OK(mtiart_device_synchronize(0));
    CHECK(atomic_load(&counter) == N && atomic_load(&late_counter) == 1 &&
          atomic_load(&t_counter) == 1);
    for (int i = 0; i < N; i++) CHECK_OK(mtiart_stream_destroy(s[i]));
    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_event_destroy(f));
    CHECK_OK(mtiart_stream_destroy(g_stream));
    CHECK_OK(mtiart_stream_destroy(t_stream));
    CHECK_OK(mtiart_stream_destroy(late));
}

/* Many threads record and wait on shared events concurrently. */
typedef struct thread_ctx {
    mtiart_event *events;
    int index;
    atomic_long *counter;
    int failed;
} thread_ctx;

#include <pthread.h>
static void *event_thread(void *arg) {
    thread_ctx *c = arg;
    mtiart_stream s;
    if (mtiart_stream_create(0, 0, &s)) {
        c->failed = 1;
        return NULL;
    }
    for (int i = 0; i < 300; i++) {
        mtiart_event mine = c->events[c->index];
        mtiart_event other = c->events[(c->index + 1 + i) % 4];
        mtiart_arg a = {MTIART_ARG_VALUE, sizeof c->counter, &c->counter, 0};
        if (mtiart_launch_kernel(s, k_count, 1, &a, 1) || mtiart_event_record(mine, s) ||
            mtiart_stream_wait_event(s, other))
            c->failed = 1;
        if (i % 50 == 0 && mtiart_event_query(other) < 0) c->failed = 1;
    }
    if (mtiart_stream_synchronize(s) || mtiart_stream_destroy(s)) c->failed = 1;
    return NULL;
}

static void test_concurrent_threads(void) {
    mtiart_event ev[4];
    atomic_long counter = 0;
    for (int i = 0; i < 4; i++) CHECK_OK(mtiart_event_create(0, &ev[i]));
    pthread_t th[4];
    thread_ctx ctx[4];
    for (int i = 0; i < 4; i++) {
        ctx[i] = (thread_ctx){ev, i, &counter, 0};
        pthread_create(&th[i], NULL, event_thread, &ctx[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(!ctx[i].failed);
    }
    CHECK(atomic_load(&counter) == 1200);
    CHECK_OK(mtiart_device_synchronize(0));
    for (int i = 0; i < 4; i++) CHECK_OK(mtiart_event_destroy(ev[i]));
}

static int run_all(void) {
    CHECK_OK(mtiart_init());
    mtiart_device_properties props;
    CHECK_OK(mtiart_device_get_properties(0, &props));
    g_workers = props.num_workers;
    test_record_query_sync();
    test_sync_implies_recorded();
    test_cross_stream_wait();
    test_wait_never_recorded();
    test_timing();
    test_destroy_while_waited();
    test_rerecord();
    test_ping_pong();
    test_many_waiters();
    test_mixed_generation_waiters();
    test_concurrent_threads();
    printf("events with %d worker(s): %s\n", g_workers, test_failures ? "FAILED" : "passed");
    return test_failures;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--one-worker") == 0) {
        /* Before the first libmtiart call: configuration is read at initialisation. */
        setenv("MTIART_NUM_WORKERS", "1", 1);
        run_all();
        mtiart_device_properties props;
        CHECK_OK(mtiart_device_get_properties(0, &props));
        CHECK(props.num_workers == 1);
        TEST_MAIN_END();
    }
    /* The one-worker child first, before this process starts its own workers. */
    pid_t pid;
    char *child_argv[] = {argv[0], "--one-worker", NULL};
    /* argv[0], not /proc/self/exe: under valgrind the latter is the valgrind tool. */
    const char *self = strchr(argv[0], '/') ? argv[0] : "/proc/self/exe";
    int rc = posix_spawn(&pid, self, NULL, NULL, child_argv, environ);
    CHECK(rc == 0);
    int status = 0;
    if (rc == 0) {
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    run_all();
    TEST_MAIN_END();
}
