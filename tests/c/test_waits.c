/* Waiting: work that idle workers help with (multi-block kernels, graph replays with many
 * chains) completes whether waits spin or block, and waits stop burning CPU when they are
 * long. meson runs this program twice: with the default spin policy (adaptive spinning)
 * and with MTIART_SPIN_US=0, where every wait blocks at once (as under valgrind).
 * Also: MTIART_SPIN_US is validated. */
#include <pthread.h>
#include <unistd.h>

#include "rt_helpers.h"

static int g_blocking;

static double cpu_ms(clockid_t which) {
    struct timespec ts;
    clock_gettime(which, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Kernel: each block adds its index + 1 into a slot of its own, after some arithmetic. */
static int32_t k_blocks(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)num_blocks;
    int64_t *out = *(int64_t *const *)args[0];
    volatile uint64_t x = block;
    for (int i = 0; i < 2000; i++) x = x * 6364136223846793005ull + 1;
    out[block] += block + 1;
    return 0;
}

/* Multi-block kernels with a synchronize each: the job protocol (post, help, close,
 * retire) through every mode, from several threads at once. */
typedef struct blocks_ctx {
    int loops;
    int failures;
} blocks_ctx;

static void *blocks_thread(void *p) {
    blocks_ctx *c = p;
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    enum { BLOCKS = 18 };
    int64_t *out;
    CHECK_OK(mtiart_malloc(0, BLOCKS * sizeof(int64_t), (void **)&out));
    CHECK_OK(mtiart_memset_async(s, out, 0, BLOCKS * sizeof(int64_t)));
    mtiart_arg a = {MTIART_ARG_BUFFER_INOUT, 0, out, BLOCKS * sizeof(int64_t)};
    for (int i = 0; i < c->loops; i++) {
        CHECK_OK(mtiart_launch_kernel(s, k_blocks, BLOCKS, &a, 1));
        CHECK_OK(mtiart_stream_synchronize(s));
    }
    int64_t host[BLOCKS];
    CHECK_OK(mtiart_memcpy(s, host, out, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
    for (int b = 0; b < BLOCKS; b++)
        if (host[b] != (int64_t)(b + 1) * c->loops) c->failures++;
    CHECK_OK(mtiart_free(out));
    CHECK_OK(mtiart_stream_destroy(s));
    return NULL;
}

static void test_blocks_from_threads(void) {
    enum { THREADS = 4 };
    pthread_t t[THREADS];
    blocks_ctx c[THREADS];
    for (int i = 0; i < THREADS; i++) {
        c[i] = (blocks_ctx){.loops = 200};
        pthread_create(&t[i], NULL, blocks_thread, &c[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        CHECK(c[i].failures == 0);
    }
}

/* A replay with many chains that become ready one after another (a diamond lattice: each
 * node of a layer depends on two of the previous one), so helpers wait for tasks in the
 * middle of a replay, and replays back to back and one at a time. */
static void test_replays_with_waiting_helpers(void) {
    enum { WIDTH = 6, LAYERS = 40 };
    int64_t *cells;
    CHECK_OK(mtiart_malloc(0, WIDTH * LAYERS * sizeof(int64_t), (void **)&cells));
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_memset_async(s, cells, 0, WIDTH * LAYERS * sizeof(int64_t)));
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    size_t node[LAYERS][WIDTH];
    for (int l = 0; l < LAYERS; l++)
        for (int w = 0; w < WIDTH; w++) {
            int64_t *cell = &cells[l * WIDTH + w];
            int64_t one = 1;
            mtiart_arg a[2] = {{MTIART_ARG_BUFFER_INOUT, 0, cell, sizeof(int64_t)},
                               {MTIART_ARG_VALUE, sizeof one, &one, 0}};
            size_t deps[2] = {l ? node[l - 1][w] : 0, l ? node[l - 1][(w + 1) % WIDTH] : 0};
            CHECK_OK(
                mtiart_graph_add_kernel_node(g, deps, l ? 2 : 0, k_add_i64, 1, a, 2, &node[l][w]));
        }
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    int replays = 0;
    for (int round = 0; round < 50; round++) {
        int n = 1 + round % 4;
        for (int i = 0; i < n; i++) CHECK_OK(mtiart_graph_launch(x, s));
        replays += n;
        if (round % 2) CHECK_OK(mtiart_stream_synchronize(s));
    }
    CHECK_OK(mtiart_stream_synchronize(s));
    int64_t host[WIDTH * LAYERS];
    CHECK_OK(mtiart_memcpy(s, host, cells, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));
    int wrong = 0;
    for (int i = 0; i < WIDTH * LAYERS; i++) wrong += host[i] != replays;
    CHECK(wrong == 0);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_OK(mtiart_free(cells));
}

/* Threads hammering one stream: its enqueue spinlock contended (a futex mutex when waits
 * block). */
typedef struct hammer_ctx {
    mtiart_stream s;
    atomic_long *counter;
} hammer_ctx;

static void *hammer_thread(void *p) {
    hammer_ctx *c = p;
    for (int i = 0; i < 5000; i++) launch_count(c->s, c->counter);
    return NULL;
}

static void test_contended_stream(void) {
    enum { THREADS = 6 };
    atomic_long counter = 0;
    hammer_ctx c;
    CHECK_OK(mtiart_stream_create(0, 0, &c.s));
    c.counter = &counter;
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, hammer_thread, &c);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    CHECK_OK(mtiart_stream_synchronize(c.s));
    CHECK(atomic_load(&counter) == THREADS * 5000);
    CHECK_OK(mtiart_stream_destroy(c.s));
}

/* Waits for work that takes longer than the longest spin (50 us by default): after a few
 * of them the host thread sleeps almost at once, and the whole process stays nearly idle
 * while nothing runs. The host functions sleep ~100 us: spinning the full 50 us before
 * each sleep would use ~50% of the host thread; the bounds are loose (a loaded machine
 * only lowers CPU use per wall second). */
static void test_long_waits_do_not_spin(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    double ms = 0.05;
    for (int i = 0; i < 5; i++) { /* learn */
        CHECK_OK(mtiart_launch_host_func(s, h_sleep, &ms));
        CHECK_OK(mtiart_stream_synchronize(s));
    }
    double wall0 = now_ms(), host0 = cpu_ms(CLOCK_THREAD_CPUTIME_ID);
    for (int i = 0; i < 500; i++) {
        CHECK_OK(mtiart_launch_host_func(s, h_sleep, &ms));
        CHECK_OK(mtiart_stream_synchronize(s));
    }
    double wall = now_ms() - wall0, host = cpu_ms(CLOCK_THREAD_CPUTIME_ID) - host0;
    if (getenv("WAITS_VERBOSE") || host > 0.25 * wall)
        fprintf(stderr, "host thread: %.1f ms CPU in %.1f ms of waits\n", host, wall);
    CHECK(host <= 0.25 * wall);

    /* Nothing queued: the workers go to sleep. */
    sleep_ms(5);
    double idle0 = now_ms(), all0 = cpu_ms(CLOCK_PROCESS_CPUTIME_ID);
    sleep_ms(100);
    double idle = now_ms() - idle0, all = cpu_ms(CLOCK_PROCESS_CPUTIME_ID) - all0;
    if (all > 0.1 * idle) fprintf(stderr, "idle process: %.1f ms CPU in %.1f ms\n", all, idle);
    CHECK(all <= 0.1 * idle);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* A wait that blocks at once never spins at all: a host thread waiting on a 100 ms host
 * function uses next to no CPU, nor do the idle workers meanwhile. */
static void test_blocking_waits_use_no_cpu(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    double ms = 100;
    double wall0 = now_ms(), host0 = cpu_ms(CLOCK_THREAD_CPUTIME_ID),
           all0 = cpu_ms(CLOCK_PROCESS_CPUTIME_ID);
    CHECK_OK(mtiart_launch_host_func(s, h_sleep, &ms));
    CHECK_OK(mtiart_stream_synchronize(s));
    double wall = now_ms() - wall0, host = cpu_ms(CLOCK_THREAD_CPUTIME_ID) - host0,
           all = cpu_ms(CLOCK_PROCESS_CPUTIME_ID) - all0;
    CHECK(host <= 0.05 * wall);
    CHECK(all <= 0.1 * wall);
    CHECK_OK(mtiart_stream_destroy(s));
}

/* Child mode: initialise with the environment given and print the error, if any. */
static int init_child(void) {
    mtiart_status st = mtiart_init();
    printf("%s\n", st ? mtiart_last_error_message() : "ok");
    return st ? 1 : 0;
}

/* The output of this program run as an init child with MTIART_SPIN_US=value. */
static int run_init_child(const char *value, char *out, size_t cap) {
    char env[128];
    snprintf(env, sizeof env, "MTIART_SPIN_US=%s", value);
    return test_run_self("--init-child", env, out, cap);
}

static void test_spin_setting_is_validated(void) {
    char out[512];
    CHECK(run_init_child("0", out, sizeof out) == 0);
    CHECK(run_init_child("200", out, sizeof out) == 0);
    static const char *const bad[] = {"abc", "-1", "12us", "2000000"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(run_init_child(bad[i], out, sizeof out) == 1);
        CHECK(strstr(out, "invalid MTIART_SPIN_US") != NULL);
    }
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--init-child") == 0) return init_child();
    const char *spin = getenv("MTIART_SPIN_US");
    g_blocking = spin && strcmp(spin, "0") == 0;
    CHECK_OK(mtiart_init());
    test_blocks_from_threads();
    test_replays_with_waiting_helpers();
    test_contended_stream();
    if (g_blocking) test_blocking_waits_use_no_cpu();
    else test_long_waits_do_not_spin();
    test_spin_setting_is_validated();
    TEST_MAIN_END();
}
