/* A host thread that waits for a stream (synchronize, a blocking copy, a device synchronize)
 * may run blocks of the runtime's own multi-block kernels on that stream while a worker
 * sleeps. These tests hold it to what a worker guarantees: results bitwise equal to the
 * workers' own, waits with a time limit still ending near it, a program's kernels never
 * running on the waiting thread, and every other stream going on while a host helps. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rt_helpers.h"

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define UNDER_VALGRIND() RUNNING_ON_VALGRIND
#endif
#ifndef UNDER_VALGRIND
#define UNDER_VALGRIND() 0
#endif

/* Operands whose products and sums are small integers: every summation order gives the
 * same float32 bits, so the blocked kernel can be compared bitwise with a plain loop. */
typedef struct problem {
    int64_t m, k, n;
    float *a, *b, *want; /* host */
    float *da, *db, *dc; /* device */
} problem;

static void problem_init(problem *p, int64_t m, int64_t k, int64_t n, unsigned seed) {
    *p = (problem){.m = m, .k = k, .n = n};
    p->a = malloc((size_t)(m * k) * sizeof(float));
    p->b = malloc((size_t)(k * n) * sizeof(float));
    p->want = calloc((size_t)(m * n), sizeof(float));
    for (int64_t i = 0; i < m * k; i++) p->a[i] = (float)((int)((seed + 7 * i) % 5) - 2);
    for (int64_t i = 0; i < k * n; i++) p->b[i] = (float)((int)((seed * 3 + 11 * i) % 5) - 2);
    for (int64_t i = 0; i < m; i++)
        for (int64_t x = 0; x < k; x++)
            for (int64_t j = 0; j < n; j++) p->want[i * n + j] += p->a[i * k + x] * p->b[x * n + j];
    CHECK_OK(mtiart_malloc(0, (size_t)(m * k) * sizeof(float), (void **)&p->da));
    CHECK_OK(mtiart_malloc(0, (size_t)(k * n) * sizeof(float), (void **)&p->db));
    CHECK_OK(mtiart_malloc(0, (size_t)(m * n) * sizeof(float), (void **)&p->dc));
    memcpy(p->da, p->a, (size_t)(m * k) * sizeof(float));
    memcpy(p->db, p->b, (size_t)(k * n) * sizeof(float));
}

static void problem_free(problem *p) {
    CHECK_OK(mtiart_free(p->da));
    CHECK_OK(mtiart_free(p->db));
    CHECK_OK(mtiart_free(p->dc));
    free(p->a);
    free(p->b);
    free(p->want);
}

static void launch_matmul(mtiart_stream s, problem *p) {
    mtiart_tensor_desc a = {p->da, MTIART_DTYPE_FLOAT32, 2, {p->m, p->k}};
    mtiart_tensor_desc b = {p->db, MTIART_DTYPE_FLOAT32, 2, {p->k, p->n}};
    mtiart_tensor_desc c = {p->dc, MTIART_DTYPE_FLOAT32, 2, {p->m, p->n}};
    CHECK_OK(mtiart_op_matmul(s, &c, &a, &b));
}

/* ---------------------------------------------------------------- results */

typedef struct waiter_args {
    int index;
    int iterations;
    atomic_int *mismatches;
} waiter_args;

/* Each thread its own stream and problem; each iteration clears the output, multiplies and
 * waits in one of the three ways a host waits for a stream. */
static void *waiter_main(void *arg) {
    waiter_args *w = arg;
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    problem p;
    problem_init(&p, 64, 256, 512, (unsigned)w->index + 1);
    size_t bytes = (size_t)(p.m * p.n) * sizeof(float);
    float *got = malloc(bytes);
    for (int it = 0; it < w->iterations; it++) {
        CHECK_OK(mtiart_memset_async(s, p.dc, 0xff, bytes));
        launch_matmul(s, &p);
        switch (it % 3) {
        case 0:
            CHECK_OK(mtiart_stream_synchronize(s));
            memcpy(got, p.dc, bytes);
            break;
        case 1: CHECK_OK(mtiart_memcpy(s, got, p.dc, bytes, MTIART_MEMCPY_DEVICE_TO_HOST)); break;
        default:
            CHECK_OK(mtiart_device_synchronize(0));
            memcpy(got, p.dc, bytes);
            break;
        }
        if (memcmp(got, p.want, bytes) != 0) atomic_fetch_add(w->mismatches, 1);
    }
    free(got);
    problem_free(&p);
    CHECK_OK(mtiart_stream_destroy(s));
    return NULL;
}

static void test_results_with_waiting_hosts(void) {
    enum { THREADS = 3 };
    atomic_int mismatches = 0;
    pthread_t threads[THREADS];
    waiter_args args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (waiter_args){i, UNDER_VALGRIND() ? 4 : 60, &mismatches};
        CHECK(pthread_create(&threads[i], NULL, waiter_main, &args[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
    CHECK(atomic_load(&mismatches) == 0);
}

/* ---------------------------------------------------------------- program kernels */

static pthread_t g_main_thread;
static atomic_int g_blocks_on_main, g_blocks_run;

static int32_t k_note_thread(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args;
    (void)block;
    (void)num_blocks;
    if (pthread_equal(pthread_self(), g_main_thread)) atomic_fetch_add(&g_blocks_on_main, 1);
    atomic_fetch_add(&g_blocks_run, 1);
    /* long enough for the waiting thread to arrive while blocks are left */
    double until = now_ms() + 0.1;
    while (now_ms() < until) {}
    return 0;
}

static void test_program_kernels_run_on_workers(void) {
    g_main_thread = pthread_self();
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    int dummy = 0;
    mtiart_arg a = {MTIART_ARG_VALUE, sizeof dummy, &dummy, 0};
    for (int it = 0; it < 100; it++) {
        CHECK_OK(mtiart_launch_kernel(s, k_note_thread, 16, &a, 1));
        if (it % 2) CHECK_OK(mtiart_stream_synchronize(s));
        else CHECK_OK(mtiart_device_synchronize(0));
    }
    CHECK(atomic_load(&g_blocks_run) == 100 * 16);
    CHECK(atomic_load(&g_blocks_on_main) == 0);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ---------------------------------------------------------------- time limits */

/* A host that helps runs one block at a time and looks at its deadline between blocks, so a
 * wait with a short limit on a long kernel still returns NOT_READY, within a block's time. */
#define QUEUED 6

static void test_timed_waits_on_a_long_kernel(void) {
    /* A timing check, and valgrind's scheduler may keep a thread that computes running
     * until its kernel ends, while a timed-out waiter waits for its turn. */
    if (UNDER_VALGRIND()) return;
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    problem p;
    problem_init(&p, 384, 384, 384, 5);
    size_t bytes = (size_t)(p.m * p.n) * sizeof(float);
    /* The limit below in this environment's terms (under valgrind a product takes seconds):
     * one product's time, waited for without a limit. */
    double t0 = now_ms();
    launch_matmul(s, &p);
    CHECK_OK(mtiart_stream_synchronize(s));
    double one = now_ms() - t0;
    /* A round whose first wait already finds the queue done proves nothing either way: on a
     * loaded machine this thread can be off its CPU for longer than the queue takes. Such a
     * round is retried, a few times at most. */
    int round = 0;
    for (int attempt = 0; round < 2 && attempt < 8; attempt++) {
        CHECK_OK(mtiart_memset_async(s, p.dc, 0, bytes));
        for (int i = 0; i < QUEUED; i++) launch_matmul(s, &p);
        int not_ready = 0;
        double worst = 0;
        for (;;) {
            double t0 = now_ms();
            mtiart_status st = mtiart_stream_synchronize_timeout(s, 100000); /* 0.1 ms */
            double took = now_ms() - t0;
            if (took > worst) worst = took;
            if (st == MTIART_SUCCESS) break;
            CHECK_STATUS(st, MTIART_NOT_READY);
            not_ready++;
        }
        CHECK(memcmp(p.dc, p.want, bytes) == 0);
        if (not_ready == 0) continue;
        round++;
        /* at most a block of one product, and a scheduling delay; a wait that ran the
         * queue before looking at its deadline would take about QUEUED products */
        if (worst > 2 * one + 200) {
            fprintf(stderr, "a 0.1 ms wait took %.1f ms (one product: %.1f ms)\n", worst, one);
            test_failures++;
        }
    }
    CHECK(round == 2); /* not 8 preemptions in a row, but a wait that ignores its deadline */
    problem_free(&p);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ---------------------------------------------------------------- other streams */

typedef struct busy_args {
    atomic_int *stop;
    atomic_int rounds;
} busy_args;

static void *matmul_waiter(void *arg) {
    busy_args *b = arg;
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    problem p;
    problem_init(&p, 128, 256, 512, 9);
    while (!atomic_load(b->stop)) {
        launch_matmul(s, &p);
        CHECK_OK(mtiart_stream_synchronize(s));
        atomic_fetch_add(&b->rounds, 1);
    }
    CHECK(memcmp(p.dc, p.want, (size_t)(p.m * p.n) * sizeof(float)) == 0);
    problem_free(&p);
    CHECK_OK(mtiart_stream_destroy(s));
    return NULL;
}

/* While other threads wait for (and help with) their streams' kernels, work on a stream of
 * this thread's, queued while it was idle, and another thread's one-block kernels still
 * run: the waiting hosts' spinning must never keep a sleeping worker from being woken. */
static void test_other_streams_go_on(void) {
    enum { HELPERS = 2 };
    atomic_int stop = 0;
    pthread_t threads[HELPERS];
    busy_args args[HELPERS];
    for (int i = 0; i < HELPERS; i++) {
        args[i].stop = &stop;
        atomic_init(&args[i].rounds, 0);
        CHECK(pthread_create(&threads[i], NULL, matmul_waiter, &args[i]) == 0);
    }
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    int64_t *value;
    CHECK_OK(mtiart_malloc(0, sizeof *value, (void **)&value));
    *value = 0;
    const int adds = UNDER_VALGRIND() ? 100 : 2000;
    for (int it = 0; it < adds; it++) {
        CHECK_OK(launch_add_i64(s, value, 1));
        if (it % 50 == 0) sleep_ms(0.2); /* let the stream go idle, its worker to sleep */
        if (it % 10 == 9)
            CHECK_OK(mtiart_stream_synchronize_timeout(s, 30000000000ull)); /* 30 s: a hang fails */
    }
    CHECK_OK(mtiart_stream_synchronize_timeout(s, 30000000000ull)); /* 30 s: a hang fails */
    CHECK(*value == adds);
    for (int i = 0; i < HELPERS; i++) CHECK(WAIT_UNTIL(atomic_load(&args[i].rounds) > 1, 30000));
    atomic_store(&stop, 1);
    for (int i = 0; i < HELPERS; i++) pthread_join(threads[i], NULL);
    CHECK_OK(mtiart_free(value));
    CHECK_OK(mtiart_stream_destroy(s));
}

int main(void) {
    CHECK_OK(mtiart_init());
    test_results_with_waiting_hosts();
    test_program_kernels_run_on_workers();
    test_timed_waits_on_a_long_kernel();
    test_other_streams_go_on();
    TEST_MAIN_END();
}
