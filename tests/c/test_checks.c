/* Graph checks: races found by mtiart_graph_check_races (a forgotten join in a capture,
 * overlapping and disjoint slices, read-read sharing, child graphs, every pair of a random
 * graph against a brute-force closure), the instantiate flag that refuses racy graphs, and
 * the executable's check; why a capture was invalidated (the call, its thread, the caller
 * hook's location) in every message that reports it and from the query; graphs sharing a
 * pool replayed out of capture order or concurrently (warned, refused, unchecked); debug
 * schedules (serial, reverse, seeded random: valid orders, reproducible). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "rt_helpers.h"

static size_t races_of(mtiart_graph g, mtiart_race *out, size_t cap) {
    size_t count = 99;
    CHECK_OK(mtiart_graph_check_races(g, out, cap, &count));
    return count;
}

static uint64_t stream_id(mtiart_stream s) {
    uint64_t id = 0;
    CHECK_OK(mtiart_stream_get_id(s, &id));
    return id;
}

/* A side stream writes `b` while the origin reads it: with `join_before_read` the origin
 * waits for the side stream first (correct), else only at the end (a forgotten wait). */
static mtiart_graph capture_fork(mtiart_stream origin, mtiart_stream side, float *a, float *b,
                                 float *c, bool join_before_read) {
    mtiart_event forked, joined;
    CHECK_OK(mtiart_event_create(0, &forked));
    CHECK_OK(mtiart_event_create(0, &joined));
    float one = 1.0f;
    CHECK_OK(
        mtiart_stream_begin_capture(origin, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_fill_async(origin, a, &one, sizeof one, 16));
    CHECK_OK(mtiart_event_record(forked, origin));
    CHECK_OK(mtiart_stream_wait_event(side, forked));
    CHECK_OK(mtiart_memcpy_async(side, b, a, 16 * sizeof(float), MTIART_MEMCPY_DEVICE_TO_DEVICE));
    CHECK_OK(mtiart_event_record(joined, side));
    if (join_before_read) CHECK_OK(mtiart_stream_wait_event(origin, joined));
    CHECK_OK(mtiart_memcpy_async(origin, c, b, 16 * sizeof(float), MTIART_MEMCPY_DEVICE_TO_DEVICE));
    if (!join_before_read) CHECK_OK(mtiart_stream_wait_event(origin, joined));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(origin, &g));
    CHECK_OK(mtiart_event_destroy(forked));
    CHECK_OK(mtiart_event_destroy(joined));
    return g;
}

static void test_forgotten_wait(void) {
    mtiart_stream origin, side;
    CHECK_OK(mtiart_stream_create(0, 0, &origin));
    CHECK_OK(mtiart_stream_create(0, 0, &side));
    float *a, *b, *c;
    CHECK_OK(mtiart_malloc(0, 64, (void **)&a));
    CHECK_OK(mtiart_malloc(0, 64, (void **)&b));
    CHECK_OK(mtiart_malloc(0, 64, (void **)&c));

    mtiart_graph bad = capture_fork(origin, side, a, b, c, false);
    mtiart_race r[4];
    memset(r, 0, sizeof r);
    CHECK(races_of(bad, r, 4) == 1);
    CHECK(r[0].first.node == 1 && r[0].second.node == 2);
    CHECK(r[0].first.stream == stream_id(side) && r[0].second.stream == stream_id(origin));
    CHECK(r[0].first.access == MTIART_ARG_BUFFER_OUT && r[0].second.access == MTIART_ARG_BUFFER_IN);
    CHECK(r[0].address == (uint64_t)(uintptr_t)b && r[0].bytes == 64);
    CHECK(strcmp(r[0].first.name, "memcpy DtoD") == 0);
    /* Counting alone. */
    size_t count = 0;
    CHECK_OK(mtiart_graph_check_races(bad, NULL, 0, &count));
    CHECK(count == 1);
    CHECK_STATUS(mtiart_graph_check_races(bad, NULL, 1, &count), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_check_races(bad, r, 1, NULL), MTIART_ERROR_INVALID_VALUE);

    /* The instantiate flag refuses it and says why; the graph stays usable. */
    mtiart_graph_exec x;
    CHECK_STATUS(mtiart_graph_instantiate_with_flags(bad, MTIART_INSTANTIATE_CHECK_RACES, &x),
                 MTIART_ERROR_INVALID_VALUE);
    const char *msg = mtiart_last_error_message();
    CHECK(strstr(msg, "mtiart_graph_instantiate_with_flags: the graph has 1 race: node 1 "
                      "(memcpy DtoD, stream ") == msg);
    CHECK(strstr(msg, ") writes and node 2 (memcpy DtoD, stream ") != NULL);
    CHECK(strstr(msg, ") reads 64 bytes at 0x") != NULL);
    CHECK(strstr(msg, "with no path between them") != NULL);
    CHECK_STATUS(mtiart_graph_instantiate_with_flags(bad, 1u << 7, &x), MTIART_ERROR_INVALID_VALUE);
    CHECK(strstr(mtiart_last_error_message(), "unknown instantiate flags 0x80") != NULL);
    CHECK_OK(mtiart_graph_instantiate_with_flags(bad, MTIART_INSTANTIATE_DEFAULT, &x));
    CHECK_OK(mtiart_graph_exec_check_races(x, r, 4, &count));
    CHECK(count == 1 && r[0].first.node == 1);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(bad));

    mtiart_graph good = capture_fork(origin, side, a, b, c, true);
    CHECK(races_of(good, r, 4) == 0);
    CHECK_OK(mtiart_graph_instantiate_with_flags(good, MTIART_INSTANTIATE_CHECK_RACES, &x));
    CHECK_OK(mtiart_graph_launch(x, origin));
    CHECK_OK(mtiart_stream_synchronize(origin));
    CHECK_OK(mtiart_graph_exec_check_races(x, r, 4, &count));
    CHECK(count == 0);
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_graph_destroy(good));

    CHECK_STATUS(mtiart_graph_check_races(NULL, r, 4, &count), MTIART_ERROR_INVALID_HANDLE);
    CHECK_STATUS(mtiart_graph_exec_check_races(NULL, r, 4, &count), MTIART_ERROR_INVALID_HANDLE);
    CHECK_OK(mtiart_free(a));
    CHECK_OK(mtiart_free(b));
    CHECK_OK(mtiart_free(c));
    CHECK_OK(mtiart_stream_destroy(side));
    CHECK_OK(mtiart_stream_destroy(origin));
}

/* Hand-built: independent nodes on slices of one allocation. */
static void test_slices(void) {
    uint8_t *buf, *src;
    CHECK_OK(mtiart_malloc(0, 256, (void **)&buf));
    CHECK_OK(mtiart_malloc(0, 256, (void **)&src));
    uint32_t zero = 0;
    mtiart_race r[8];
    size_t n;

    /* Disjoint halves written independently, both read independently: no race. */
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    CHECK_OK(mtiart_graph_add_fill_node(g, NULL, 0, buf, &zero, 4, 32, &n));
    CHECK_OK(mtiart_graph_add_fill_node(g, NULL, 0, buf + 128, &zero, 4, 32, &n));
    CHECK_OK(mtiart_graph_add_memcpy_node(g, NULL, 0, src, src + 128, 64,
                                          MTIART_MEMCPY_DEVICE_TO_DEVICE, &n));
    CHECK_OK(mtiart_graph_add_memcpy_node(g, NULL, 0, src + 64, src + 128, 64,
                                          MTIART_MEMCPY_DEVICE_TO_DEVICE, &n));
    CHECK(races_of(g, r, 8) == 0);
    /* A reader of the whole after both, joined: still none. */
    size_t deps[2] = {0, 1};
    CHECK_OK(mtiart_graph_add_memcpy_node(g, deps, 2, src + 192, buf + 64, 64,
                                          MTIART_MEMCPY_DEVICE_TO_DEVICE, &n));
    CHECK(races_of(g, r, 8) == 0);
    /* A writer that overlaps the first half by 8 bytes, unordered: it races with the
     * first half's writer and its reader, on those bytes. */
    CHECK_OK(mtiart_graph_add_fill_node(g, NULL, 0, buf + 120, &zero, 4, 2, &n));
    CHECK(races_of(g, r, 8) == 2);
    CHECK(r[0].first.node == 0 && r[0].second.node == 5);
    CHECK(r[0].address == (uint64_t)(uintptr_t)(buf + 120) && r[0].bytes == 8);
    CHECK(r[1].first.node == 4 && r[1].second.node == 5);
    CHECK(r[1].first.access == MTIART_ARG_BUFFER_IN && r[1].second.access == MTIART_ARG_BUFFER_OUT);
    CHECK(r[1].address == (uint64_t)(uintptr_t)(buf + 120) && r[1].bytes == 8);
    CHECK(r[0].first.stream == 0 && r[0].second.stream == 0);
    CHECK(strcmp(r[0].second.name, "fill x4") == 0);
    CHECK_OK(mtiart_graph_destroy(g));

    /* Three unordered writers of the same bytes: every pair. */
    CHECK_OK(mtiart_graph_create(0, &g));
    for (int i = 0; i < 3; i++)
        CHECK_OK(mtiart_graph_add_fill_node(g, NULL, 0, buf, &zero, 4, 4, &n));
    CHECK(races_of(g, r, 8) == 3);
    CHECK(r[0].first.node == 0 && r[0].second.node == 1);
    CHECK(r[1].first.node == 0 && r[1].second.node == 2);
    CHECK(r[2].first.node == 1 && r[2].second.node == 2);
    /* Truncated to the capacity, the count stays. */
    memset(r, 0xee, sizeof r);
    CHECK(races_of(g, r, 1) == 3);
    CHECK(r[0].first.node == 0 && r[1].first.node == 0xeeeeeeeeeeeeeeeeull);
    CHECK_OK(mtiart_graph_destroy(g));

    /* Readers only: none, however many. */
    CHECK_OK(mtiart_graph_create(0, &g));
    for (int i = 0; i < 5; i++)
        CHECK_OK(mtiart_graph_add_memcpy_node(g, NULL, 0, src + 64 * (i % 2), buf, 64,
                                              MTIART_MEMCPY_DEVICE_TO_DEVICE, &n));
    /* ...but their destinations (two of them, each written by 2 or 3 nodes) race. */
    CHECK(races_of(g, r, 8) == 4); /* {0,2,4} on src: 3 pairs; {1,3} on src+64: 1 */
    CHECK_OK(mtiart_graph_destroy(g));

    /* A child graph counts as what its body touches. */
    mtiart_graph body;
    CHECK_OK(mtiart_graph_create(0, &body));
    CHECK_OK(mtiart_graph_add_empty_node(body, NULL, 0, &n));
    CHECK_OK(mtiart_graph_add_fill_node(body, &n, 1, buf, &zero, 4, 4, &n));
    CHECK_OK(mtiart_graph_create(0, &g));
    CHECK_OK(
        mtiart_graph_add_memcpy_node(g, NULL, 0, src, buf, 16, MTIART_MEMCPY_DEVICE_TO_DEVICE, &n));
    CHECK_OK(mtiart_graph_add_child_graph_node(g, NULL, 0, body, &n));
    CHECK(races_of(g, r, 8) == 1);
    CHECK(r[0].first.node == 0 && r[0].second.node == 1);
    CHECK(r[0].second.access == MTIART_ARG_BUFFER_OUT);
    CHECK(strncmp(r[0].second.name, "child graph", 11) == 0);
    /* Ordered after it: none. */
    size_t first = 0;
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_graph_create(0, &g));
    CHECK_OK(mtiart_graph_add_memcpy_node(g, NULL, 0, src, buf, 16, MTIART_MEMCPY_DEVICE_TO_DEVICE,
                                          &first));
    CHECK_OK(mtiart_graph_add_child_graph_node(g, &first, 1, body, &n));
    CHECK(races_of(g, r, 8) == 0);
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_graph_destroy(body));
    CHECK_OK(mtiart_free(buf));
    CHECK_OK(mtiart_free(src));
}

/* Random graphs: the racing pairs are exactly those a brute-force closure finds. */
#define RN 48
static void test_random_against_closure(void) {
    uint8_t *mem;
    CHECK_OK(mtiart_malloc(0, 4096, (void **)&mem));
    unsigned seed = 12345;
    for (int round = 0; round < 200; round++) {
        mtiart_graph g;
        CHECK_OK(mtiart_graph_create(0, &g));
        bool anc[RN][RN];
        memset(anc, 0, sizeof anc);
        uint64_t lo[RN][2], hi[RN][2];
        int nbuf[RN];
        bool writes[RN][2];
        int density = 1 + round % 6;
        for (int v = 0; v < RN; v++) {
            size_t deps[RN];
            size_t nd = 0;
            for (int u = 0; u < v; u++)
                if ((int)(rand_r(&seed) % 100) < density * 3) deps[nd++] = (size_t)u;
            for (size_t k = 0; k < nd; k++) {
                anc[v][deps[k]] = true;
                for (int w = 0; w < RN; w++) anc[v][w] |= anc[deps[k]][w];
            }
            uint32_t off = rand_r(&seed) % 16 * 8, len = 8 + rand_r(&seed) % 4 * 8;
            uint32_t off2 = rand_r(&seed) % 16 * 8;
            size_t n;
            uint32_t zero = 0;
            if (rand_r(&seed) % 2) {
                CHECK_OK(mtiart_graph_add_fill_node(g, nd ? deps : NULL, nd, mem + off, &zero, 4,
                                                    len / 4, &n));
                nbuf[v] = 1;
                lo[v][0] = off, hi[v][0] = off + len, writes[v][0] = true;
            } else {
                CHECK_OK(mtiart_graph_add_memcpy_node(g, nd ? deps : NULL, nd, mem + off,
                                                      mem + (round % 2 ? off2 : 1024 + off2), len,
                                                      MTIART_MEMCPY_DEVICE_TO_DEVICE, &n));
                nbuf[v] = 2;
                lo[v][0] = off, hi[v][0] = off + len, writes[v][0] = true;
                lo[v][1] = round % 2 ? off2 : 1024 + off2;
                hi[v][1] = lo[v][1] + len, writes[v][1] = false;
            }
        }
        bool expect[RN][RN];
        memset(expect, 0, sizeof expect);
        size_t expected_pairs = 0;
        for (int b = 0; b < RN; b++)
            for (int a = 0; a < b; a++) {
                if (anc[b][a]) continue;
                bool race = false;
                for (int i = 0; i < nbuf[a]; i++)
                    for (int j = 0; j < nbuf[b]; j++)
                        race |= (writes[a][i] || writes[b][j]) && lo[a][i] < hi[b][j] &&
                                lo[b][j] < hi[a][i];
                expect[a][b] = race;
                expected_pairs += race;
            }
        size_t count;
        CHECK_OK(mtiart_graph_check_races(g, NULL, 0, &count));
        mtiart_race *r = calloc(count ? count : 1, sizeof *r);
        CHECK_OK(mtiart_graph_check_races(g, r, count, &count));
        bool got[RN][RN];
        memset(got, 0, sizeof got);
        size_t pairs = 0;
        for (size_t i = 0; i < count; i++) {
            int a = (int)r[i].first.node, b = (int)r[i].second.node;
            CHECK(a < b && b < RN);
            if (!got[a][b]) pairs++;
            got[a][b] = true;
        }
        int wrong = 0;
        for (int b = 0; b < RN; b++)
            for (int a = 0; a < b; a++) wrong += got[a][b] != expect[a][b];
        if (wrong || pairs != expected_pairs) {
            fprintf(stderr, "round %d: %d pairs differ (%zu found, %zu expected)\n", round, wrong,
                    pairs, expected_pairs);
            test_failures++;
        }
        free(r);
        CHECK_OK(mtiart_graph_destroy(g));
    }
    CHECK_OK(mtiart_free(mem));
}

/* ------------------------------------------------------------------ invalidation */

static void *synchronize_from_worker(void *arg) {
    pthread_setname_np(pthread_self(), "worker-2");
    mtiart_status *st = arg;
    *st = mtiart_device_synchronize(0);
    char *copy = strdup(mtiart_last_error_message());
    return copy;
}

static char *invalidation_of(mtiart_stream s) {
    size_t len = 0;
    CHECK_OK(mtiart_stream_get_capture_invalidation(s, NULL, 0, &len));
    char *text = malloc(len + 1);
    size_t again = 0;
    CHECK_OK(mtiart_stream_get_capture_invalidation(s, text, len + 1, &again));
    CHECK(again == len && strlen(text) == len);
    return text;
}

static void test_invalidation_names_the_culprit(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    char sid[32];
    snprintf(sid, sizeof sid, "stream %llu", (unsigned long long)stream_id(s));
    char *none = invalidation_of(s);
    CHECK(strcmp(none, "") == 0);
    free(none);
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    char *healthy = invalidation_of(s);
    CHECK(strcmp(healthy, "") == 0);
    free(healthy);

    /* Another thread's synchronize in global mode: its own error says it broke the capture. */
    pthread_t t;
    mtiart_status st = MTIART_SUCCESS;
    pthread_create(&t, NULL, synchronize_from_worker, &st);
    char *own = NULL;
    pthread_join(t, (void **)&own);
    CHECK(st == MTIART_ERROR_CAPTURE_UNSUPPORTED);
    CHECK(strstr(own, "mtiart_device_synchronize: not permitted while ") == own);
    CHECK(strstr(own, "the capture has been invalidated (mtiart_device_synchronize on thread "
                      "'worker-2' (tid ") != NULL);
    free(own);

    /* The reason the capture keeps, from the query... */
    char *reason = invalidation_of(s);
    CHECK(strstr(reason, "capture invalidated by mtiart_device_synchronize on thread 'worker-2' "
                         "(tid ") == reason);
    char tail[128];
    snprintf(tail, sizeof tail,
             ") while %s was capturing in global mode (a capture in global mode "
             "is active)",
             sid);
    CHECK(strstr(reason, tail) != NULL);
    /* ...from work that finds the capture invalidated... */
    float one = 1.0f;
    void *buf;
    CHECK_OK(mtiart_malloc(0, 64, &buf));
    CHECK_STATUS(mtiart_fill_async(s, buf, &one, sizeof one, 4), MTIART_ERROR_CAPTURE_INVALIDATED);
    CHECK(strstr(mtiart_last_error_message(), reason) != NULL);
    /* ...and from the end of the capture, which leaves it for the query too. */
    mtiart_graph g;
    CHECK_STATUS(mtiart_stream_end_capture(s, &g), MTIART_ERROR_CAPTURE_INVALIDATED);
    const char *end = mtiart_last_error_message();
    CHECK(strstr(end, "mtiart_stream_end_capture: capture ") == end);
    CHECK(strstr(end, reason) != NULL);
    char *after = invalidation_of(s);
    CHECK(strcmp(after, reason) == 0);
    free(after);
    /* Truncated to the capacity, with the full length. */
    char small[8];
    size_t len = 0;
    CHECK_OK(mtiart_stream_get_capture_invalidation(s, small, sizeof small, &len));
    CHECK(len == strlen(reason) && strlen(small) == 7 && strncmp(small, reason, 7) == 0);
    free(reason);
    /* A new capture starts clean. */
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    char *fresh = invalidation_of(s);
    CHECK(strcmp(fresh, "") == 0);
    free(fresh);
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_STATUS(mtiart_stream_get_capture_invalidation(s, NULL, 4, &len),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_stream_get_capture_invalidation(NULL, small, 8, &len),
                 MTIART_ERROR_INVALID_HANDLE);
    CHECK_OK(mtiart_free(buf));
    CHECK_OK(mtiart_stream_destroy(s));
}

static void name_the_caller(mtiart_caller_info *info, void *user_data) {
    int *calls = user_data;
    (*calls)++;
    snprintf(info->thread, sizeof info->thread, "trainer");
    snprintf(info->call, sizeof info->call, "synchronize()");
    snprintf(info->location, sizeof info->location, "train.py:88 in step");
    /* A public call from the hook names its own errors and takes no capture lock. */
    mtiart_capture_status cs;
    mtiart_stream bad = (mtiart_stream)(uintptr_t)0x7777;
    if (mtiart_stream_get_capture_info(bad, &cs, NULL, NULL) != MTIART_ERROR_INVALID_HANDLE ||
        strstr(mtiart_last_error_message(), "mtiart_stream_get_capture_info: ") == NULL)
        (*calls) += 1000;
}

static void test_caller_hook(void) {
    int calls = 0;
    CHECK_OK(mtiart_set_caller_hook(name_the_caller, &calls));
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(
        mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_THREAD_LOCAL, (mtiart_pool_id){0, 0}));
    /* Unsafe calls that disturb no capture do not call the hook. */
    mtiart_stream other;
    CHECK_OK(mtiart_stream_create(0, 0, &other));
    CHECK_OK(mtiart_stream_query(other));
    CHECK(calls == 0);
    CHECK_STATUS(mtiart_stream_synchronize(s), MTIART_ERROR_CAPTURE_UNSUPPORTED);
    CHECK(calls == 1);
    CHECK(strstr(mtiart_last_error_message(), "mtiart_stream_synchronize: ") ==
          mtiart_last_error_message());
    CHECK(strstr(mtiart_last_error_message(),
                 "(synchronize() (mtiart_stream_synchronize) on thread 'trainer' (tid ") != NULL);
    CHECK(strstr(mtiart_last_error_message(), ") at train.py:88 in step)") != NULL);
    mtiart_graph g;
    CHECK_STATUS(mtiart_stream_end_capture(s, &g), MTIART_ERROR_CAPTURE_INVALIDATED);
    CHECK(strstr(mtiart_last_error_message(),
                 "capture invalidated by synchronize() (mtiart_stream_synchronize) on thread "
                 "'trainer' (tid ") != NULL);
    CHECK(strstr(mtiart_last_error_message(), ") at train.py:88 in step while stream ") != NULL);
    CHECK(strstr(mtiart_last_error_message(), " was capturing in thread_local mode (the stream it "
                                              "waits for is capturing)") != NULL);
    CHECK_OK(mtiart_set_caller_hook(NULL, NULL));
    CHECK_OK(mtiart_stream_destroy(other));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ------------------------------------------------------------------ shared-pool order */

typedef struct pool_log {
    int calls;
    char last[512];
    mtiart_pool_id pool;
} pool_log;

static void log_pool(int device, mtiart_pool_id pool, const char *message, void *user_data) {
    pool_log *log = user_data;
    CHECK(device == 0);
    log->calls++;
    log->pool = pool;
    snprintf(log->last, sizeof log->last, "%s", message);
}

/* A graph captured into `pool` on `s`: one fill of `buf` (or a host function). */
static mtiart_graph_exec capture_into(mtiart_stream s, mtiart_pool_id pool, void *buf,
                                      mtiart_host_fn host) {
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, pool));
    uint32_t v = 7;
    if (host) CHECK_OK(mtiart_launch_host_func(s, host, NULL));
    else CHECK_OK(mtiart_fill_async(s, buf, &v, sizeof v, 4));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    CHECK_OK(mtiart_graph_destroy(g));
    return x;
}

static atomic_int slow_started;

/* Long enough for the other stream's replay to start while it runs. */
static int32_t slow_host(void *user_data) {
    (void)user_data;
    atomic_store(&slow_started, 1);
    sleep_ms(150);
    return 0;
}

static void test_shared_pool_order(void) {
    pool_log log = {0};
    CHECK_OK(mtiart_set_pool_order_check(MTIART_POOL_ORDER_WARN, log_pool, &log));
    mtiart_stream s, s2;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_create(0, 0, &s2));
    void *buf;
    CHECK_OK(mtiart_malloc(0, 64, &buf));
    mtiart_pool_id pool;
    CHECK_OK(mtiart_pool_handle_create(&pool));
    mtiart_graph_exec g[3];
    for (int i = 0; i < 3; i++) g[i] = capture_into(s, pool, buf, NULL);

    /* Capture order, rounds of it, a graph repeated: silent. */
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 3; i++) CHECK_OK(mtiart_graph_launch(g[i], s));
    CHECK_OK(mtiart_graph_launch(g[2], s));
    CHECK_OK(mtiart_graph_launch(g[0], s));
    CHECK_OK(mtiart_graph_launch(g[0], s));
    CHECK_OK(mtiart_graph_launch(g[1], s));
    CHECK(log.calls == 0);

    /* Out of order: warned, and run. */
    CHECK_OK(mtiart_graph_launch(g[2], s));
    CHECK_OK(mtiart_graph_launch(g[1], s));
    CHECK(log.calls == 1);
    CHECK(log.pool.first == pool.first && log.pool.second == pool.second);
    char expect[256];
    snprintf(expect, sizeof expect,
             "out-of-order replay on stream %llu: graph 1 of the 3 graphs captured into shared "
             "pool (%llu, %llu) on device 0 launched after graph 2 (expected graph 0 or 2)",
             (unsigned long long)stream_id(s), (unsigned long long)pool.first,
             (unsigned long long)pool.second);
    CHECK(strstr(log.last, expect) == log.last);
    CHECK_OK(mtiart_stream_synchronize(s));

    /* Strict: refused, nothing enqueued, the order unchanged. */
    CHECK_OK(mtiart_set_pool_order_check(MTIART_POOL_ORDER_ERROR, log_pool, &log));
    CHECK_OK(mtiart_graph_launch(g[0], s));
    CHECK_STATUS(mtiart_graph_launch(g[2], s), MTIART_ERROR_NOT_PERMITTED);
    CHECK(strstr(mtiart_last_error_message(), "mtiart_graph_launch: out-of-order replay") ==
          mtiart_last_error_message());
    CHECK(strstr(mtiart_last_error_message(), "launched after graph 0 (expected graph 0 or 1)"));
    CHECK(log.calls == 1); /* refused, not warned */
    CHECK_OK(mtiart_graph_launch(g[1], s));
    CHECK_OK(mtiart_graph_launch(g[2], s));
    CHECK_OK(mtiart_stream_synchronize(s));

    /* Off: nothing. */
    CHECK_OK(mtiart_set_pool_order_check(MTIART_POOL_ORDER_OFF, NULL, NULL));
    CHECK_OK(mtiart_graph_launch(g[1], s));
    CHECK_OK(mtiart_set_pool_order_check(MTIART_POOL_ORDER_WARN, log_pool, &log));
    CHECK(log.calls == 1);
    CHECK_STATUS(mtiart_set_pool_order_check((mtiart_pool_order_mode)7, NULL, NULL),
                 MTIART_ERROR_INVALID_VALUE);

    /* Graphs with pools of their own: any order. */
    mtiart_graph_exec p0 = capture_into(s, (mtiart_pool_id){0, 0}, buf, NULL);
    mtiart_graph_exec p1 = capture_into(s, (mtiart_pool_id){0, 0}, buf, NULL);
    CHECK_OK(mtiart_graph_launch(p1, s));
    CHECK_OK(mtiart_graph_launch(p0, s));
    CHECK_OK(mtiart_graph_launch(p1, s));
    CHECK(log.calls == 1);

    /* The order starts at the first launch, and skips graphs nothing holds any more. */
    mtiart_pool_id pool2;
    CHECK_OK(mtiart_pool_handle_create(&pool2));
    mtiart_graph_exec h0 = capture_into(s, pool2, buf, NULL);
    mtiart_graph_exec gone = capture_into(s, pool2, buf, NULL);
    mtiart_graph_exec h2 = capture_into(s, pool2, buf, NULL);
    CHECK_OK(mtiart_graph_launch(gone, s));
    CHECK_OK(mtiart_graph_launch(h2, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_graph_exec_destroy(gone));
    CHECK_OK(mtiart_graph_launch(h0, s));
    CHECK_OK(mtiart_graph_launch(h2, s)); /* graph 1 is gone: next after 0 */
    CHECK(log.calls == 1);
    CHECK_OK(mtiart_graph_launch(h0, s));
    CHECK_OK(mtiart_graph_launch(h0, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK(log.calls == 1);

    /* Concurrent replays, on two streams with no order between them (needs two workers to
     * run at once). */
    mtiart_device_properties props;
    CHECK_OK(mtiart_device_get_properties(0, &props));
    if (props.num_workers >= 2) {
        mtiart_pool_id pool3;
        CHECK_OK(mtiart_pool_handle_create(&pool3));
        mtiart_graph_exec slow = capture_into(s, pool3, buf, slow_host);
        mtiart_graph_exec next = capture_into(s, pool3, buf, NULL);
        atomic_store(&slow_started, 0);
        CHECK_OK(mtiart_graph_launch(slow, s));
        CHECK(WAIT_UNTIL(atomic_load(&slow_started), 10000));
        CHECK_OK(mtiart_graph_launch(next, s2)); /* in order, but not after it */
        CHECK_OK(mtiart_stream_synchronize(s2));
        CHECK_OK(mtiart_stream_synchronize(s));
        CHECK(log.calls == 2 && strstr(log.last, "concurrent replay on stream ") == log.last);
        CHECK(strstr(log.last, "started while graph 0 of the pool was running"));
        /* Ordered by an event: silent. */
        mtiart_event done;
        CHECK_OK(mtiart_event_create(0, &done));
        CHECK_OK(mtiart_graph_launch(slow, s));
        CHECK_OK(mtiart_event_record(done, s));
        CHECK_OK(mtiart_stream_wait_event(s2, done));
        CHECK_OK(mtiart_graph_launch(next, s2));
        CHECK_OK(mtiart_stream_synchronize(s2));
        CHECK(log.calls == 2);
        /* Strict: the second replay does not run; its stream reports it. */
        CHECK_OK(mtiart_set_pool_order_check(MTIART_POOL_ORDER_ERROR, NULL, NULL));
        atomic_store(&slow_started, 0);
        CHECK_OK(mtiart_graph_launch(slow, s));
        CHECK(WAIT_UNTIL(atomic_load(&slow_started), 10000));
        CHECK_OK(mtiart_graph_launch(next, s2));
        CHECK_STATUS(mtiart_stream_synchronize(s2), MTIART_ERROR_NOT_PERMITTED);
        CHECK(strstr(mtiart_last_error_message(), "concurrent replay on stream "));
        CHECK_OK(mtiart_stream_synchronize(s));
        CHECK_OK(mtiart_set_pool_order_check(MTIART_POOL_ORDER_WARN, log_pool, &log));
        CHECK_OK(mtiart_event_destroy(done));
        CHECK_OK(mtiart_graph_exec_destroy(slow));
        CHECK_OK(mtiart_graph_exec_destroy(next));
    }
    CHECK_OK(mtiart_set_pool_order_check(MTIART_POOL_ORDER_WARN, NULL, NULL));
    for (int i = 0; i < 3; i++) CHECK_OK(mtiart_graph_exec_destroy(g[i]));
    CHECK_OK(mtiart_graph_exec_destroy(p0));
    CHECK_OK(mtiart_graph_exec_destroy(p1));
    CHECK_OK(mtiart_graph_exec_destroy(h0));
    CHECK_OK(mtiart_graph_exec_destroy(h2));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_free(buf));
    CHECK_OK(mtiart_stream_destroy(s2));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* ------------------------------------------------------------------ schedules */

typedef struct order_trace {
    atomic_int len;
    int order[16];
} order_trace;

/* args[0]: order_trace * (value), args[1]: the node's number (value). */
static int32_t k_trace(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)block, (void)num_blocks;
    order_trace *t = *(order_trace *const *)args[0];
    int at = atomic_fetch_add(&t->len, 1);
    if (at < 16) t->order[at] = *(const int *)args[1];
    return 0;
}

static void trace_node(mtiart_graph g, order_trace *t, const size_t *deps, size_t nd) {
    static int next;
    size_t count;
    CHECK_OK(mtiart_graph_get_node_count(g, &count));
    next = (int)count;
    mtiart_arg a[2] = {{MTIART_ARG_VALUE, sizeof t, &t, 0},
                       {MTIART_ARG_VALUE, sizeof next, &next, 0}};
    size_t node;
    CHECK_OK(mtiart_graph_add_kernel_node(g, nd ? deps : NULL, nd, k_trace, 1, a, 2, &node));
}

/* One replay of x on s in `schedule`; the order its nodes ran in, as a string. */
static void replay_order(mtiart_graph_exec x, mtiart_stream s, order_trace *t,
                         mtiart_schedule schedule, uint64_t seed, char *out) {
    atomic_store(&t->len, 0);
    CHECK_OK(mtiart_graph_exec_set_schedule(x, schedule, seed));
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_graph_exec_set_schedule(x, MTIART_SCHEDULE_DEFAULT, 0)); /* launched already */
    CHECK_OK(mtiart_stream_synchronize(s));
    int n = atomic_load(&t->len);
    out[0] = '\0';
    for (int i = 0; i < n && i < 16; i++) sprintf(out + strlen(out), "%d", t->order[i]);
}

static void test_schedules(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    order_trace t;
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    /* 0, 1 and 5 roots; 2 after 0, 3 after 1, 4 after 2 and 3. */
    size_t d0 = 0, d1 = 1, d23[2] = {2, 3};
    trace_node(g, &t, NULL, 0);
    trace_node(g, &t, NULL, 0);
    trace_node(g, &t, &d0, 1);
    trace_node(g, &t, &d1, 1);
    trace_node(g, &t, d23, 2);
    trace_node(g, &t, NULL, 0);
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    char order[32], again[32];
    replay_order(x, s, &t, MTIART_SCHEDULE_SERIAL, 0, order);
    CHECK(strcmp(order, "012345") == 0);
    replay_order(x, s, &t, MTIART_SCHEDULE_REVERSE, 0, order);
    CHECK(strcmp(order, "513024") == 0);
    /* Random: valid orders, reproducible for a seed, several of them over seeds. */
    char seen[24][32];
    int distinct = 0;
    for (uint64_t seed = 0; seed < 24; seed++) {
        replay_order(x, s, &t, MTIART_SCHEDULE_RANDOM, seed, order);
        replay_order(x, s, &t, MTIART_SCHEDULE_RANDOM, seed, again);
        CHECK(strcmp(order, again) == 0);
        CHECK(strlen(order) == 6);
        int at[6];
        for (int i = 0; i < 6; i++) at[order[i] - '0'] = i;
        CHECK(at[0] < at[2] && at[1] < at[3] && at[2] < at[4] && at[3] < at[4]);
        bool fresh = true;
        for (int k = 0; k < distinct && fresh; k++) fresh = strcmp(seen[k], order) != 0;
        if (fresh) strcpy(seen[distinct++], order);
    }
    CHECK(distinct >= 5);
    /* Back to the plan: every node still runs once. */
    replay_order(x, s, &t, MTIART_SCHEDULE_DEFAULT, 0, order);
    CHECK(strlen(order) == 6);
    CHECK_STATUS(mtiart_graph_exec_set_schedule(x, (mtiart_schedule)4, 0),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_graph_exec_set_schedule(NULL, MTIART_SCHEDULE_SERIAL, 0),
                 MTIART_ERROR_INVALID_HANDLE);
    CHECK_OK(mtiart_graph_exec_destroy(x));

    /* A graph with a wait node cannot be scheduled. */
    mtiart_event e;
    CHECK_OK(mtiart_event_create(0, &e));
    size_t node;
    CHECK_OK(mtiart_graph_add_event_wait_node(g, NULL, 0, e, &node));
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    CHECK_STATUS(mtiart_graph_exec_set_schedule(x, MTIART_SCHEDULE_RANDOM, 1),
                 MTIART_ERROR_NOT_SUPPORTED);
    CHECK(strstr(mtiart_last_error_message(), "event wait nodes") != NULL);
    CHECK_OK(mtiart_graph_exec_set_schedule(x, MTIART_SCHEDULE_DEFAULT, 0));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_stream_destroy(s));
}

int main(void) {
    CHECK_OK(mtiart_init());
    test_schedules();
    test_shared_pool_order();
    test_forgotten_wait();
    test_slices();
    test_random_against_closure();
    test_invalidation_names_the_culprit();
    test_caller_hook();
    TEST_MAIN_END();
}
