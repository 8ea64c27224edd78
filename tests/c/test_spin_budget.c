/* How waits learn how long to spin before they sleep (internal API, so this program links
 * the library's objects). Two traps are checked: a wait that slept must not count the
 * scheduler's delay in running it again, and a stream's linger must learn from an op that
 * came a little after it ran out (a host returning from a wait, then launching again). */
#include "internal.h"
#include "rt_helpers.h"

static int32_t empty_kernel(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args, (void)block, (void)num_blocks;
    return 0;
}

static void test_sleeper_learns_from_its_wake(void) {
    const uint64_t max = 50000;
    mt_spin_budget b;
    mt_spin_budget_init(&b, max);
    atomic_store(&b.ns, MT_SPIN_FLOOR_NS);
    /* A wait that began 10 ms ago, slept after a 1 us spin, and was woken 20 us in: the
     * rest is the time it took to run again, which spinning would not have saved. */
    uint64_t start = mt_now_ns() - 10000000, slept_at = start + 1000;
    atomic_store(&b.woke_at, start + 20000);
    mt_spin_budget_learn_wait(&b, start, slept_at, max);
    CHECK(mt_spin_budget_ns(&b) == 40000);

    /* No wake since it went to sleep (a timeout, a signal; the stamp is an older wait's):
     * the whole wait counts, and it was longer than the longest spin. */
    atomic_store(&b.woke_at, start);
    mt_spin_budget_learn_wait(&b, start, slept_at, max);
    CHECK(mt_spin_budget_ns(&b) == 20000);

    /* A wait that never slept ignores the stamp. */
    atomic_store(&b.woke_at, start + 20000);
    mt_spin_budget_learn_wait(&b, start, 0, max);
    CHECK(mt_spin_budget_ns(&b) == 10000);

    /* The waker's stamp is the time of its call. */
    uint64_t before = mt_now_ns();
    mt_spin_budget_waking(&b);
    uint64_t stamp = atomic_load(&b.woke_at);
    CHECK(stamp >= before && stamp <= mt_now_ns());
}

/* The stream's worker has handed it back after a linger that ran out. */
#define LINGER_RAN_OUT(s)                                                                          \
    WAIT_UNTIL(atomic_load(&(s)->sched) == MT_SCHED_IDLE &&                                        \
                   atomic_load(&(s)->linger_missed_since) != 0,                                    \
               10000)

static void test_linger_learns_from_late_ops(void) {
    mtiart_stream h;
    CHECK_OK(mtiart_stream_create(0, 0, &h));
    if (mt_waits_block) { /* no spinning, so no lingering (valgrind, MTIART_SPIN_US=0) */
        CHECK_OK(mtiart_stream_destroy(h));
        return;
    }
    /* A longest linger far above the gaps below, so that a slow machine keeps the test. */
    const uint64_t saved_max = mt_linger_ns;
    mt_linger_ns = 200000000;
    mt_pin pin = {NULL};
    mt_stream *s = mt_handle_pin(MT_HANDLE_VALUE(h), MT_KIND_STREAM, &pin);
    CHECK(s != NULL);
    atomic_store(&s->linger_budget.ns, MT_SPIN_FLOOR_NS);

    CHECK_OK(mtiart_launch_kernel(h, empty_kernel, 1, NULL, 0));
    CHECK_OK(mtiart_stream_synchronize(h));
    CHECK(LINGER_RAN_OUT(s));
    /* The next op comes 2 ms after that linger began: the budget covers it from now on. It
     * is learnt by the launch that takes the stream from IDLE, so it is there on return. */
    sleep_ms(2);
    CHECK_OK(mtiart_launch_kernel(h, empty_kernel, 1, NULL, 0));
    uint64_t raised = mt_spin_budget_ns(&s->linger_budget);
    CHECK(raised >= 4000000 && raised <= mt_linger_ns);
    CHECK(atomic_load(&s->linger_missed_since) == 0);
    CHECK_OK(mtiart_stream_synchronize(h));

    /* An op further off than the longest linger halves the budget. */
    CHECK(LINGER_RAN_OUT(s));
    sleep_ms(300);
    CHECK_OK(mtiart_launch_kernel(h, empty_kernel, 1, NULL, 0));
    CHECK(mt_spin_budget_ns(&s->linger_budget) == raised / 2);
    CHECK_OK(mtiart_stream_synchronize(h));

    mt_pin_release(&pin);
    mt_linger_ns = saved_max;
    CHECK_OK(mtiart_stream_destroy(h));
}

int main(void) {
    test_sleeper_learns_from_its_wake();
    test_linger_learns_from_late_ops();
    if (test_failures) fprintf(stderr, "%d check(s) failed\n", test_failures);
    return test_failures ? 1 : 0;
}
