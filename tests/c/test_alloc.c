/* The caching allocator: rounding, stream-ordered reuse, splitting, large blocks, stats,
 * empty_cache, capacity and out-of-memory (observers, release-and-retry), invalid frees,
 * record_stream, pools, snapshots, and the blocks streams keep for their next requests (their
 * figures, bounds, draining, the rules they keep, threads). Runs with MTIART_DEVICE_MEMORY=64M. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rt_helpers.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define UNDER_VALGRIND() RUNNING_ON_VALGRIND
#endif
#endif
#ifndef UNDER_VALGRIND
#define UNDER_VALGRIND() 0
#endif

#define MiB (1ull << 20)
#define CAPACITY (64 * MiB)

static mtiart_memory_stats stats(void) {
    mtiart_memory_stats st;
    CHECK_OK(mtiart_memory_get_stats(0, &st));
    return st;
}

/* Everything released: nothing allocated, and empty_cache gives all memory back. */
static void check_clean(int line) {
    CHECK_OK(mtiart_device_synchronize(0));
    CHECK_OK(mtiart_empty_cache(0));
    mtiart_memory_stats s = stats();
    if (s.allocated_bytes || s.reserved_bytes || s.active_blocks || s.segments) {
        fprintf(stderr,
                "line %d: not clean: allocated %llu reserved %llu active %llu segments %llu\n",
                line, (unsigned long long)s.allocated_bytes, (unsigned long long)s.reserved_bytes,
                (unsigned long long)s.active_blocks, (unsigned long long)s.segments);
        test_failures++;
    }
}
#define CHECK_CLEAN() check_clean(__LINE__)

static void test_rounding(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    const size_t asked[] = {1, 511, 512, 513, 1000, 1024, 4097, 1 << 20, (1 << 20) + 1};
    const size_t want[] = {512, 512, 512, 1024, 1024, 1024, 4608, 1 << 20, (1 << 20) + 512};
    for (size_t i = 0; i < sizeof asked / sizeof asked[0]; i++) {
        mtiart_memory_stats before = stats();
        void *p;
        CHECK_OK(mtiart_malloc_async(s, asked[i], &p));
        CHECK(p != NULL);
        CHECK(((uintptr_t)p % 512) == 0);
        mtiart_memory_stats after = stats();
        mtiart_block_info b = block_at(p);
        /* Small requests (<= 1 MiB) get exactly the rounded size; a large block keeps the
         * rest of its segment when that rest is too small to split off (as in torch). */
        if (asked[i] <= MiB) CHECK(b.size == want[i]);
        else CHECK(b.size >= want[i] && b.size <= 2 * MiB);
        CHECK(b.requested_size == asked[i]);
        CHECK(after.allocated_bytes - before.allocated_bytes == b.size);
        CHECK(after.requested_bytes - before.requested_bytes == asked[i]);
        CHECK(after.active_blocks - before.active_blocks == 1);
        CHECK(b.state == MTIART_BLOCK_ACTIVE);
        /* The whole requested range is usable through the runtime. */
        CHECK_OK(mtiart_memset_async(s, p, 0x5a, asked[i]));
        int dev = -1;
        CHECK_OK(mtiart_pointer_get_device((char *)p + asked[i] - 1, &dev));
        CHECK(dev == 0);
        CHECK_OK(mtiart_free(p));
        CHECK(stats().allocated_bytes == before.allocated_bytes);
    }
    /* Size 0 gives NULL and costs nothing. */
    void *z = (void *)1;
    mtiart_memory_stats before = stats();
    CHECK_OK(mtiart_malloc_async(s, 0, &z));
    CHECK(z == NULL);
    CHECK_OK(mtiart_malloc(0, 0, &z));
    CHECK(z == NULL);
    CHECK(stats().active_blocks == before.active_blocks);
    CHECK_OK(mtiart_free(NULL));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_CLEAN();
}

static void test_reuse_and_split(void) {
    mtiart_stream s, s2;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_create(0, 0, &s2));
    void *p, *q, *r;
    CHECK_OK(mtiart_malloc_async(s, 3000, &p));
    CHECK_OK(mtiart_free(p));
    /* Same stream: the freed block comes back at once. */
    CHECK_OK(mtiart_malloc_async(s, 3000, &q));
    CHECK(q == p);
    /* Another stream does not get it while it is live, nor the cached memory of s. */
    CHECK_OK(mtiart_malloc_async(s2, 3000, &r));
    CHECK(r != q);
    CHECK_OK(mtiart_free(q));
    void *r2;
    CHECK_OK(mtiart_malloc_async(s2, 3000, &r2));
    CHECK(r2 != q);
    mtiart_block_info bq = block_at(q), br = block_at(r2);
    CHECK(bq.segment_address != br.segment_address); /* per-stream segments */
    CHECK_OK(mtiart_free(r));
    CHECK_OK(mtiart_free(r2));

    /* Splitting: two small blocks share one 2 MiB segment. */
    mtiart_memory_stats before = stats();
    void *a, *b;
    CHECK_OK(mtiart_malloc_async(s, 1000, &a));
    CHECK_OK(mtiart_malloc_async(s, 5000, &b));
    mtiart_block_info ba = block_at(a), bb = block_at(b);
    CHECK(ba.segment_address == bb.segment_address);
    CHECK(ba.segment_size == 2 * MiB);
    CHECK(a != b);
    CHECK((char *)b >= (char *)a + 1024 || (char *)a >= (char *)b + 5120);
    CHECK(stats().segments == before.segments);
    CHECK(stats().inactive_split_blocks >= 1);
    /* Freed neighbours coalesce: a block of both sizes fits where they were. */
    CHECK_OK(mtiart_free(a));
    CHECK_OK(mtiart_free(b));
    void *c;
    CHECK_OK(mtiart_malloc_async(s, 6144, &c));
    CHECK(block_at(c).segment_address == ba.segment_address);
    CHECK_OK(mtiart_free(c));
    /* Many small blocks fill one segment before a second is reserved. */
    void *many[4096];
    for (int i = 0; i < 4096; i++) CHECK_OK(mtiart_malloc_async(s, 512, &many[i]));
    CHECK(stats().segments - before.segments <= 1);
    for (int i = 0; i < 4096; i++) CHECK_OK(mtiart_free(many[i]));
    CHECK_OK(mtiart_malloc_async(s, 2 * MiB - 512, &c)); /* large path: its own segment */
    CHECK_OK(mtiart_free(c));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_OK(mtiart_stream_destroy(s2));
    CHECK_CLEAN();
}

static void test_large(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    mtiart_memory_stats before = stats();
    char *p;
    CHECK_OK(mtiart_malloc_async(s, 5 * MiB + 3, (void **)&p));
    mtiart_memory_stats after = stats();
    CHECK(after.reserved_bytes - before.reserved_bytes == 6 * MiB);
    /* the 1 MiB - 512 rest is too small to split off a large block */
    CHECK(after.allocated_bytes - before.allocated_bytes == 6 * MiB);
    mtiart_block_info b = block_at(p);
    CHECK(b.segment_size == 6 * MiB && b.segment_address == (uint64_t)(uintptr_t)p);
    /* The whole range is usable. */
    CHECK_OK(mtiart_memset_async(s, p, 0xab, 5 * MiB + 3));
    unsigned char tail[16];
    CHECK_OK(mtiart_memcpy(s, tail, p + 5 * MiB + 3 - 16, 16, MTIART_MEMCPY_DEVICE_TO_HOST));
    int bad = 0;
    for (int i = 0; i < 16; i++) bad += tail[i] != 0xab;
    CHECK(bad == 0);
    CHECK_OK(mtiart_free(p));
    /* A smaller large request reuses (and splits) the cached segment. */
    void *q, *r;
    CHECK_OK(mtiart_malloc_async(s, 3 * MiB, &q));
    CHECK(q == p);
    CHECK(stats().reserved_bytes == after.reserved_bytes);
    CHECK_OK(mtiart_malloc_async(s, 2 * MiB, &r)); /* fits in the split-off rest */
    CHECK(stats().reserved_bytes == after.reserved_bytes);
    CHECK_OK(mtiart_free(q));
    CHECK_OK(mtiart_free(r));
    /* Big but within capacity. */
    void *big;
    CHECK_OK(mtiart_malloc_async(s, 40 * MiB, &big));
    CHECK_OK(mtiart_memset_async(s, big, 1, 40 * MiB));
    CHECK_OK(mtiart_free(big));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_CLEAN();
}

static void test_stats_and_peaks(void) {
    CHECK_CLEAN();
    CHECK_OK(mtiart_memory_reset_peak_stats(0));
    CHECK_OK(mtiart_memory_reset_accumulated_stats(0));
    mtiart_memory_stats s0 = stats();
    CHECK(s0.allocated_bytes_peak == 0 && s0.reserved_bytes_peak == 0);
    CHECK(s0.alloc_requests == 0 && s0.free_requests == 0 && s0.num_ooms == 0);
    CHECK(s0.capacity == CAPACITY);
    void *a, *b;
    CHECK_OK(mtiart_malloc(0, 4 * MiB, &a));
    CHECK_OK(mtiart_malloc(0, 1000, &b));
    mtiart_memory_stats s1 = stats();
    CHECK(s1.allocated_bytes == 4 * MiB + 1024);
    CHECK(s1.requested_bytes == 4 * MiB + 1000);
    CHECK(s1.reserved_bytes == 6 * MiB);
    CHECK(s1.active_blocks == 2);
    CHECK(s1.active_bytes == 4 * MiB + 1024);
    CHECK(s1.segments == 2);
    CHECK(s1.segment_allocs == 2);
    CHECK(s1.alloc_requests == 2);
    CHECK(s1.allocated_bytes_peak == s1.allocated_bytes);
    CHECK(s1.reserved_bytes_peak == 6 * MiB);
    CHECK(s1.active_blocks_peak == 2);
    CHECK(s1.segments_peak == 2);
    CHECK_OK(mtiart_free(a));
    mtiart_memory_stats s2 = stats();
    CHECK(s2.allocated_bytes == 1024);
    CHECK(s2.active_blocks == 1);
    CHECK(s2.reserved_bytes == 6 * MiB); /* cached */
    CHECK(s2.allocated_bytes_peak == 4 * MiB + 1024);
    CHECK(s2.free_requests == 1);
    CHECK_OK(mtiart_memory_reset_peak_stats(0));
    mtiart_memory_stats s3 = stats();
    CHECK(s3.allocated_bytes_peak == 1024);
    CHECK(s3.reserved_bytes_peak == 6 * MiB);
    CHECK(s3.active_blocks_peak == 1);
    CHECK(s3.active_bytes_peak == 1024);
    CHECK(s3.segments_peak == 2);
    /* empty_cache releases the free segment only. */
    CHECK_OK(mtiart_empty_cache(0));
    mtiart_memory_stats s4 = stats();
    CHECK(s4.reserved_bytes == 2 * MiB);
    CHECK(s4.segments == 1);
    CHECK(s4.segment_frees == 1);
    CHECK(s4.reserved_bytes_peak == 6 * MiB); /* peaks are not reset by empty_cache */
    CHECK_OK(mtiart_memory_reset_peak_stats(0));
    CHECK(stats().reserved_bytes_peak == 2 * MiB);
    CHECK_OK(mtiart_free(b));
    CHECK_OK(mtiart_empty_cache(0));
    mtiart_memory_stats s5 = stats();
    CHECK(s5.reserved_bytes == 0 && s5.segments == 0 && s5.allocated_bytes == 0);
    CHECK(s5.requested_bytes == 0 && s5.active_bytes == 0);
    CHECK_OK(mtiart_memory_reset_accumulated_stats(0));
    mtiart_memory_stats s6 = stats();
    CHECK(s6.alloc_requests == 0 && s6.free_requests == 0 && s6.segment_allocs == 0 &&
          s6.segment_frees == 0);
}

/* ------------------------------------------------------------------ capacity / OOM */

typedef struct oom_record {
    int calls;
    int device;
    uint64_t requested, allocated, reserved, capacity;
} oom_record;

static void on_oom(int device, uint64_t requested, uint64_t allocated, uint64_t reserved,
                   uint64_t capacity, void *user) {
    oom_record *r = user;
    r->calls++;
    r->device = device;
    r->requested = requested;
    r->allocated = allocated;
    r->reserved = reserved;
    r->capacity = capacity;
    /* The allocator must not hold its lock while calling out. */
    mtiart_memory_stats st;
    if (mtiart_memory_get_stats(device, &st) != MTIART_SUCCESS) r->calls += 1000;
}

static void test_capacity_oom(void) {
    CHECK_CLEAN();
    mtiart_device_properties props;
    CHECK_OK(mtiart_device_get_properties(0, &props));
    CHECK(props.total_memory == CAPACITY);
    oom_record rec = {0};
    CHECK_OK(mtiart_attach_oom_observer(on_oom, &rec));
    mtiart_memory_stats s0 = stats();
    void *p = (void *)0x77;
    /* Larger than the device */
    CHECK_STATUS(mtiart_malloc(0, 80 * MiB, &p), MTIART_ERROR_OUT_OF_MEMORY);
    CHECK(p == (void *)0x77);
    const char *msg = mtiart_last_error_message();
    CHECK(strstr(msg, "out of memory") != NULL);
    CHECK(strstr(msg, "83886080") != NULL); /* requested */
    CHECK(strstr(msg, "67108864") != NULL); /* capacity */
    CHECK(rec.calls == 1);
    CHECK(rec.device == 0 && rec.requested == 80 * MiB && rec.capacity == CAPACITY);
    CHECK(stats().num_ooms == s0.num_ooms + 1);

    /* Filling the device in pieces */
    void *a, *b;
    CHECK_OK(mtiart_malloc(0, 30 * MiB, &a));
    CHECK_OK(mtiart_malloc(0, 30 * MiB, &b));
    CHECK_STATUS(mtiart_malloc(0, 10 * MiB, &p), MTIART_ERROR_OUT_OF_MEMORY);
    msg = mtiart_last_error_message();
    CHECK(strstr(msg, "out of memory") != NULL);
    CHECK(strstr(msg, "10485760") != NULL); /* requested */
    CHECK(strstr(msg, "62914560") != NULL); /* allocated and reserved: 60 MiB */
    CHECK(rec.calls == 2);
    CHECK(rec.requested == 10 * MiB && rec.allocated == 60 * MiB && rec.reserved == 60 * MiB);
    CHECK(stats().num_ooms == s0.num_ooms + 2);
    /* Small blocks still fit in the remaining 4 MiB. */
    void *small;
    CHECK_OK(mtiart_malloc(0, 1 * MiB, &small));
    CHECK_OK(mtiart_free(small));
    CHECK_OK(mtiart_free(a));
    CHECK_OK(mtiart_free(b));
    CHECK_OK(mtiart_detach_oom_observer(on_oom, &rec));
    CHECK_STATUS(mtiart_detach_oom_observer(on_oom, &rec), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_malloc(0, 100 * MiB, &p), MTIART_ERROR_OUT_OF_MEMORY);
    CHECK(rec.calls == 2); /* detached */
    CHECK_CLEAN();
}

static void test_release_and_retry(void) {
    CHECK_CLEAN();
    mtiart_stream s1, s2;
    CHECK_OK(mtiart_stream_create(0, 0, &s1));
    CHECK_OK(mtiart_stream_create(0, 0, &s2));
    mtiart_memory_stats s0 = stats();
    /* Fill the cache of s1 with 40 MiB it no longer uses. */
    void *p, *q;
    CHECK_OK(mtiart_malloc_async(s1, 40 * MiB, &p));
    CHECK_OK(mtiart_free(p));
    CHECK(stats().reserved_bytes == 40 * MiB);
    /* s2 cannot use s1's cached block; only releasing it makes room. */
    CHECK_OK(mtiart_malloc_async(s2, 40 * MiB, &q));
    mtiart_memory_stats s3 = stats();
    CHECK(s3.num_alloc_retries == s0.num_alloc_retries + 1);
    CHECK(s3.num_ooms == s0.num_ooms);
    CHECK(s3.reserved_bytes == 40 * MiB);
    CHECK(block_at(q).stream_id != 0);
    /* Small cached blocks of many streams are released too. */
    CHECK_OK(mtiart_free(q));
    mtiart_stream many[8];
    for (int i = 0; i < 8; i++) {
        void *t;
        CHECK_OK(mtiart_stream_create(0, 0, &many[i]));
        CHECK_OK(mtiart_malloc_async(many[i], 6 * MiB, &t));
        CHECK_OK(mtiart_free(t));
    }
    CHECK_OK(mtiart_malloc_async(s1, 60 * MiB, &p));
    CHECK(stats().num_alloc_retries >= s0.num_alloc_retries + 2);
    CHECK_OK(mtiart_free(p));
    for (int i = 0; i < 8; i++) CHECK_OK(mtiart_stream_destroy(many[i]));
    CHECK_OK(mtiart_stream_destroy(s1));
    CHECK_OK(mtiart_stream_destroy(s2));
    CHECK_CLEAN();
}

/* ------------------------------------------------------------------ invalid frees */

static void test_invalid_frees(void) {
    char *p;
    CHECK_OK(mtiart_malloc(0, 4096, (void **)&p));
    CHECK_STATUS(mtiart_free(p + 512), MTIART_ERROR_INVALID_POINTER); /* interior */
    CHECK_STATUS(mtiart_free(p + 1), MTIART_ERROR_INVALID_POINTER);
    CHECK(strstr(mtiart_last_error_message(), "free") != NULL);
    int host;
    CHECK_STATUS(mtiart_free(&host), MTIART_ERROR_INVALID_POINTER);
    CHECK_OK(mtiart_free(p));
    CHECK_STATUS(mtiart_free(p), MTIART_ERROR_INVALID_POINTER); /* double */
    /* The block is intact for its next user. */
    char *q;
    CHECK_OK(mtiart_malloc(0, 4096, (void **)&q));
    CHECK(q == p);
    CHECK(block_at(q).state == MTIART_BLOCK_ACTIVE);
    CHECK_STATUS(mtiart_free(q + 4096), MTIART_ERROR_INVALID_POINTER);
    CHECK_OK(mtiart_free(q));
    /* After its segment is released, too. */
    CHECK_OK(mtiart_empty_cache(0));
    CHECK_STATUS(mtiart_free(q), MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(mtiart_record_stream(q, NULL), MTIART_ERROR_INVALID_HANDLE);
    mtiart_stream def;
    CHECK_OK(mtiart_stream_get_default(0, &def));
    CHECK_STATUS(mtiart_record_stream(q, def), MTIART_ERROR_INVALID_POINTER);
    CHECK_CLEAN();
}

/* ------------------------------------------------------------------ record_stream */

static void test_record_stream(void) {
    mtiart_stream owner, user;
    CHECK_OK(mtiart_stream_create(0, 0, &owner));
    CHECK_OK(mtiart_stream_create(0, 0, &user));
    int64_t *x;
    CHECK_OK(mtiart_malloc_async(owner, 1024, (void **)&x));
    CHECK_OK(mtiart_memset_async(owner, x, 0, 1024));
    mtiart_event ready;
    CHECK_OK(mtiart_event_create(0, &ready));
    CHECK_OK(mtiart_event_record(ready, owner));
    CHECK_OK(mtiart_stream_wait_event(user, ready));
    /* `user` is held by a gate, then reads x. */
    gate g = {0};
    launch_gate(user, &g);
    CHECK_OK(launch_add_i64(user, x, 1));
    CHECK_OK(mtiart_record_stream(x, user));
    CHECK_OK(mtiart_record_stream(x, user));  /* twice is fine */
    CHECK_OK(mtiart_record_stream(x, owner)); /* the owner itself is implied */
    mtiart_memory_stats before = stats();
    CHECK_OK(mtiart_free(x));
    /* Still counted active, waiting for `user`. */
    mtiart_block_info b = block_at(x);
    CHECK(b.state == MTIART_BLOCK_PENDING_FREE);
    CHECK(stats().active_blocks == before.active_blocks);
    CHECK(stats().allocated_bytes == before.allocated_bytes - 1024);
    /* The next allocation on the owner stream must not get x back. */
    void *y;
    CHECK_OK(mtiart_malloc_async(owner, 1024, &y));
    CHECK(y != (void *)x);
    /* It is not a valid pointer any more for new work either. */
    CHECK_STATUS(mtiart_memset_async(owner, x, 0, 8), MTIART_ERROR_INVALID_POINTER);
    atomic_store(&g.open, 1);
    CHECK_OK(mtiart_stream_synchronize(user));
    /* Now it comes back. */
    void *z;
    CHECK_OK(mtiart_malloc_async(owner, 1024, &z));
    CHECK(z == (void *)x);
    CHECK(stats().active_blocks == before.active_blocks + 1);
    CHECK_OK(mtiart_free(y));
    CHECK_OK(mtiart_free(z));

    /* A block recorded on a stream that has since been destroyed. */
    mtiart_stream tmp;
    CHECK_OK(mtiart_stream_create(0, 0, &tmp));
    void *w;
    CHECK_OK(mtiart_malloc_async(owner, 2048, &w));
    gate g2 = {0};
    launch_gate(tmp, &g2);
    CHECK_OK(mtiart_record_stream(w, tmp));
    CHECK_OK(mtiart_stream_destroy(tmp));
    CHECK_OK(mtiart_free(w));
    CHECK(block_at(w).state == MTIART_BLOCK_PENDING_FREE);
    atomic_store(&g2.open, 1);
    CHECK_OK(mtiart_device_synchronize(0));
    void *w2;
    CHECK_OK(mtiart_malloc_async(owner, 2048, &w2));
    CHECK(w2 == w);
    CHECK_OK(mtiart_free(w2));

    CHECK_OK(mtiart_event_destroy(ready));
    CHECK_OK(mtiart_stream_destroy(owner));
    CHECK_OK(mtiart_stream_destroy(user));
    CHECK_CLEAN();
}

/* ------------------------------------------------------------------ frees with pending work */

static void *open_gate_later(void *arg) {
    sleep_ms(60);
    atomic_store(&((gate *)arg)->open, 1);
    return NULL;
}

/* A block freed on its own stream is reusable by that stream at once, but its memory must
 * not be given back to the device while work enqueued before the free may still touch it:
 * empty_cache (and the release-and-retry path) must neither unmap it under that work nor
 * hand it to another stream. */
static void test_free_with_pending_work(void) {
    CHECK_CLEAN();
    mtiart_stream s, s2;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_create(0, 0, &s2));
    /* empty_cache while the freed block's stream still has work on it */
    char *p;
    CHECK_OK(mtiart_malloc_async(s, 3 * MiB, (void **)&p));
    gate g = {0};
    launch_gate(s, &g);
    CHECK_OK(mtiart_memset_async(s, p, 1, 3 * MiB));
    CHECK_OK(mtiart_free(p));
    pthread_t th;
    pthread_create(&th, NULL, open_gate_later, &g);
    CHECK_OK(mtiart_empty_cache(0)); /* must not pull the memory from under the memset */
    pthread_join(th, NULL);
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_empty_cache(0));
    CHECK(stats().reserved_bytes == 0);

    /* The release-and-retry path with a busy stream: another stream's allocation that
     * needs the cached segment either waits for the work or fails cleanly; it never
     * takes the memory while the memset may still write to it. */
    CHECK_OK(mtiart_malloc_async(s, 40 * MiB, (void **)&p));
    gate g2 = {0};
    launch_gate(s, &g2);
    CHECK_OK(mtiart_memset_async(s, p, 2, 40 * MiB));
    CHECK_OK(mtiart_free(p));
    pthread_create(&th, NULL, open_gate_later, &g2);
    char *q = NULL;
    mtiart_status st = mtiart_malloc_async(s2, 40 * MiB, (void **)&q);
    CHECK(st == MTIART_SUCCESS || st == MTIART_ERROR_OUT_OF_MEMORY);
    if (st == MTIART_SUCCESS) {
        /* Our data must survive the other stream's pending memset. */
        CHECK_OK(mtiart_memset_async(s2, q, 3, 40 * MiB));
        CHECK_OK(mtiart_stream_synchronize(s2));
        pthread_join(th, NULL);
        CHECK_OK(mtiart_stream_synchronize(s));
        unsigned char probe[4] = {0};
        CHECK_OK(mtiart_memcpy(s2, probe, q + 20 * MiB, 4, MTIART_MEMCPY_DEVICE_TO_HOST));
        CHECK(probe[0] == 3 && probe[3] == 3);
        CHECK_OK(mtiart_free(q));
    } else {
        pthread_join(th, NULL);
        CHECK_OK(mtiart_stream_synchronize(s));
        CHECK_OK(mtiart_malloc_async(s2, 40 * MiB, (void **)&q)); /* fits once s is done */
        CHECK_OK(mtiart_free(q));
    }
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_OK(mtiart_stream_destroy(s2));
    CHECK_CLEAN();
}

/* mtiart_free_async: the free waits for the work enqueued on the given stream, whichever
 * stream allocated the block (mtiart_free orders against the allocating stream only). */
static void test_free_async(void) {
    CHECK_CLEAN();
    mtiart_stream s1, s2;
    CHECK_OK(mtiart_stream_create(0, 0, &s1));
    CHECK_OK(mtiart_stream_create(0, 0, &s2));
    /* s2's long kernel reads p, allocated on s1: the free on s2 keeps p from s1's next
     * allocations until that kernel is done. */
    char *p, *q;
    CHECK_OK(mtiart_malloc_async(s1, 4096, (void **)&p));
    CHECK_OK(mtiart_memset_async(s1, p, 1, 4096));
    CHECK_OK(mtiart_stream_synchronize(s1));
    gate g = {0};
    launch_gate(s2, &g);
    CHECK_OK(mtiart_memset_async(s2, p, 2, 4096));
    CHECK_OK(mtiart_free_async(p, s2));
    CHECK(block_at(p).state == MTIART_BLOCK_PENDING_FREE);
    CHECK_OK(mtiart_malloc_async(s1, 4096, (void **)&q));
    CHECK(q != p);
    CHECK_OK(mtiart_memset_async(s1, q, 3, 4096));
    atomic_store(&g.open, 1);
    CHECK_OK(mtiart_stream_synchronize(s2));
    CHECK_OK(mtiart_stream_synchronize(s1));
    unsigned char probe = 0;
    CHECK_OK(mtiart_memcpy(s1, &probe, q, 1, MTIART_MEMCPY_DEVICE_TO_HOST));
    CHECK(probe == 3);
    CHECK_OK(mtiart_free(q));
    /* Once s2 is past the free, the memory is s1's again. */
    char *r;
    CHECK_OK(mtiart_malloc_async(s1, 4096, (void **)&r));
    CHECK(block_at(p).state != MTIART_BLOCK_PENDING_FREE);
    CHECK_OK(mtiart_free(r));
    /* On the allocating stream itself: reusable by its later work at once. */
    CHECK_OK(mtiart_malloc_async(s1, 4096, (void **)&p));
    CHECK_OK(mtiart_free_async(p, s1));
    CHECK_OK(mtiart_malloc_async(s1, 4096, (void **)&q));
    CHECK(q == p);
    CHECK_OK(mtiart_free(q));
    /* On a capturing stream: deferred to the capture's end, as the capture's nodes read
     * the block at replay. */
    CHECK_OK(mtiart_malloc_async(s1, 4096, (void **)&p));
    CHECK_OK(mtiart_stream_begin_capture(s2, MTIART_CAPTURE_MODE_RELAXED, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_memset_async(s2, p, 4, 4096));
    CHECK_OK(mtiart_free_async(p, s2));
    CHECK(block_at(p).state != MTIART_BLOCK_ACTIVE && block_at(p).state != MTIART_BLOCK_FREE);
    CHECK_STATUS(mtiart_free_async(p, s2), MTIART_ERROR_INVALID_POINTER); /* freed already */
    mtiart_graph gr;
    CHECK_OK(mtiart_stream_end_capture(s2, &gr));
    CHECK(block_at(p).state == MTIART_BLOCK_GRAPH_HELD); /* the graph holds it */
    CHECK_OK(mtiart_graph_destroy(gr));
    CHECK(block_at(p).state != MTIART_BLOCK_GRAPH_HELD);
    /* Errors: nothing is freed by a refused call. */
    CHECK_OK(mtiart_free_async(NULL, s1));
    int host;
    CHECK_STATUS(mtiart_free_async(&host, s1), MTIART_ERROR_INVALID_POINTER);
    CHECK_OK(mtiart_malloc_async(s1, 4096, (void **)&p));
    CHECK_STATUS(mtiart_free_async(p + 8, s1), MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(mtiart_free_async(p, NULL), MTIART_ERROR_INVALID_HANDLE);
    mtiart_stream gone;
    CHECK_OK(mtiart_stream_create(0, 0, &gone));
    CHECK_OK(mtiart_stream_destroy(gone));
    CHECK_STATUS(mtiart_free_async(p, gone), MTIART_ERROR_INVALID_HANDLE);
    CHECK(block_at(p).state == MTIART_BLOCK_ACTIVE);
    CHECK_OK(mtiart_free_async(p, s2));
    CHECK_STATUS(mtiart_free_async(p, s2), MTIART_ERROR_INVALID_POINTER);
    CHECK_OK(mtiart_stream_destroy(s1));
    CHECK_OK(mtiart_stream_destroy(s2));
    CHECK_CLEAN();
}

/* ------------------------------------------------------------------ pools */

static void test_pools(void) {
    mtiart_pool_id h1, h2;
    CHECK_OK(mtiart_pool_handle_create(&h1));
    CHECK_OK(mtiart_pool_handle_create(&h2));
    CHECK(h1.first == 0 && h1.second != 0);
    CHECK(h2.first == 0 && h2.second > h1.second);
    mtiart_pool_info info;
    CHECK_OK(mtiart_pool_get_info(0, h1, &info));
    CHECK(info.exists == 0 && info.use_count == 0);
    /* The default pool always exists. */
    CHECK_OK(mtiart_pool_get_info(0, (mtiart_pool_id){0, 0}, &info));
    CHECK(info.exists == 1);

    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, h1));
    CHECK_OK(mtiart_pool_get_info(0, h1, &info));
    CHECK(info.exists == 1 && info.use_count == 1);
    void *p;
    CHECK_OK(mtiart_malloc_async(s, 10000, &p));
    CHECK_OK(mtiart_memset_async(s, p, 0, 10000));
    CHECK_OK(mtiart_pool_get_info(0, h1, &info));
    CHECK(info.active_blocks == 1 && info.allocated_bytes == 10240 &&
          info.reserved_bytes == 2 * MiB);
    mtiart_block_info b = block_at(p);
    CHECK(b.pool.first == h1.first && b.pool.second == h1.second);
    CHECK(stats().private_pools >= 1);
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    CHECK_OK(mtiart_pool_get_info(0, h1, &info));
    CHECK(info.use_count == 1); /* the graph */
    mtiart_graph_exec x;
    CHECK_OK(mtiart_graph_instantiate(g, &x));
    CHECK_OK(mtiart_pool_get_info(0, h1, &info));
    CHECK(info.use_count == 2); /* graph + exec */
    /* A second capture into the same pool. */
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, h1));
    CHECK_OK(mtiart_pool_get_info(0, h1, &info));
    CHECK(info.use_count == 3);
    mtiart_graph g2;
    CHECK_OK(mtiart_stream_end_capture(s, &g2));
    mtiart_pool_id got;
    CHECK_OK(mtiart_graph_get_pool(g2, &got));
    CHECK(got.first == h1.first && got.second == h1.second);
    CHECK_OK(mtiart_graph_destroy(g2));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_pool_get_info(0, h1, &info));
    CHECK(info.use_count == 1);
    /* empty_cache keeps a pool that an executable uses. */
    CHECK_OK(mtiart_free(p));
    CHECK_OK(mtiart_empty_cache(0));
    CHECK_OK(mtiart_pool_get_info(0, h1, &info));
    CHECK(info.exists == 1 && info.reserved_bytes == 2 * MiB && info.active_blocks == 0);
    CHECK_OK(mtiart_graph_launch(x, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_graph_exec_destroy(x));
    /* No users and no blocks: the pool is gone with its memory. */
    CHECK_OK(mtiart_pool_get_info(0, h1, &info));
    CHECK(info.use_count == 0 && info.reserved_bytes == 0);
    CHECK_OK(mtiart_empty_cache(0));
    CHECK_OK(mtiart_pool_get_info(0, h1, &info));
    CHECK(info.exists == 0);
    /* Eager allocations never come from a private pool. */
    void *e;
    CHECK_OK(mtiart_malloc_async(s, 10000, &e));
    b = block_at(e);
    CHECK(b.pool.first == 0 && b.pool.second == 0);
    CHECK_OK(mtiart_free(e));
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_CLEAN();
    CHECK(stats().private_pools == 0);
}

static void test_snapshot(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    uint64_t sid;
    CHECK_OK(mtiart_stream_get_id(s, &sid));
    void *a, *b, *c;
    CHECK_OK(mtiart_malloc_async(s, 1000, &a));
    CHECK_OK(mtiart_malloc_async(s, 2000, &b));
    CHECK_OK(mtiart_malloc_async(s, 3 * MiB, &c));
    size_t n = 0;
    CHECK_OK(mtiart_memory_snapshot(0, NULL, 0, &n));
    CHECK(n >= 4); /* a, b, the free rest of their segment, c */
    mtiart_block_info *all = calloc(n, sizeof *all);
    size_t n2 = 0;
    CHECK_OK(mtiart_memory_snapshot(0, all, n, &n2));
    CHECK(n2 == n);
    int seen = 0;
    uint64_t seg_total = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK(all[i].device == 0);
        CHECK(all[i].address >= all[i].segment_address &&
              all[i].address + all[i].size <= all[i].segment_address + all[i].segment_size);
        if (all[i].address == (uint64_t)(uintptr_t)a || all[i].address == (uint64_t)(uintptr_t)b ||
            all[i].address == (uint64_t)(uintptr_t)c) {
            seen++;
            CHECK(all[i].state == MTIART_BLOCK_ACTIVE);
            CHECK(all[i].stream_id == sid);
            CHECK(all[i].pool.first == 0 && all[i].pool.second == 0);
        }
        /* Blocks of a segment are listed in address order, contiguous. */
        if (i > 0 && all[i].segment_address == all[i - 1].segment_address)
            CHECK(all[i].address == all[i - 1].address + all[i - 1].size);
        if (all[i].address == all[i].segment_address) seg_total += all[i].segment_size;
    }
    CHECK(seen == 3);
    CHECK(seg_total == stats().reserved_bytes);
    /* A short buffer: count still tells the total. */
    mtiart_block_info two[2];
    size_t n3 = 0;
    CHECK_OK(mtiart_memory_snapshot(0, two, 2, &n3));
    CHECK(n3 == n);
    free(all);
    CHECK_OK(mtiart_free(a));
    CHECK_OK(mtiart_free(b));
    CHECK_OK(mtiart_free(c));
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_CLEAN();
}

/* Many short-lived streams that allocate: the allocator's per-stream bookkeeping must not
 * make later allocations slower and slower (a lookup per allocation that walked every
 * stream ever seen took ~100 us after a few thousand streams). */
static void test_many_streams(void) {
    if (UNDER_VALGRIND()) return; /* a timing check, and ~50 s under valgrind */
    mtiart_stream a, b;
    CHECK_OK(mtiart_stream_create(0, 0, &a));
    CHECK_OK(mtiart_stream_create(0, 0, &b));
    for (int i = 0; i < 2; i++) {
        void *p;
        CHECK_OK(mtiart_malloc_async(i ? a : b, 512, &p));
        CHECK_OK(mtiart_free(p));
    }
    for (int i = 0; i < 4000; i++) {
        mtiart_stream s;
        void *p;
        CHECK_OK(mtiart_stream_create(0, 0, &s));
        CHECK_OK(mtiart_malloc_async(s, 512, &p));
        CHECK_OK(mtiart_free(p));
        CHECK_OK(mtiart_stream_destroy(s));
        if (i % 1000 == 999) CHECK_OK(mtiart_empty_cache(0)); /* 2 MiB cached per stream */
    }
    double t0 = now_ms();
    enum { OPS = 5000 };
    for (int i = 0; i < OPS; i++) {
        void *p;
        CHECK_OK(mtiart_malloc_async(i % 2 ? a : b, 512, &p));
        CHECK_OK(mtiart_free(p));
    }
    double us_per_op = (now_ms() - t0) * 1000 / OPS;
    if (us_per_op > 20) {
        fprintf(stderr, "alternating-stream malloc+free takes %.1f us\n", us_per_op);
        test_failures++;
    }
    CHECK_OK(mtiart_stream_destroy(a));
    CHECK_OK(mtiart_stream_destroy(b));
    CHECK_CLEAN();
}

/* Short-lived streams, each allocating and freeing one block: a destroyed stream's cached
 * memory goes to the streams that come after it (once its work is done) instead of
 * piling up until an out-of-memory retry. */
static void test_dead_streams_memory_reused(void) {
    CHECK_CLEAN();
    uint64_t most = 0, retries = stats().num_alloc_retries;
    for (int i = 0; i < 1000; i++) {
        mtiart_stream s;
        void *p, *q;
        CHECK_OK(mtiart_stream_create(0, 0, &s));
        CHECK_OK(mtiart_malloc_async(s, MiB, &p));
        CHECK_OK(mtiart_malloc_async(s, 3 * MiB, &q)); /* a large segment too */
        CHECK_OK(mtiart_memset_async(s, p, i, MiB));
        CHECK_OK(mtiart_free(p));
        CHECK_OK(mtiart_free(q));
        CHECK_OK(mtiart_stream_destroy(s));
        if (i % 2) CHECK_OK(mtiart_device_synchronize(0)); /* some still busy at the next */
        uint64_t reserved = stats().reserved_bytes;
        if (reserved > most) most = reserved;
    }
    /* A few streams' worth (those whose work is still running), not a thousand. */
    CHECK(most <= 32 * MiB);
    CHECK(stats().num_alloc_retries == retries);
    /* A live stream's cache stays its own. */
    mtiart_stream keeper, other;
    CHECK_OK(mtiart_stream_create(0, 0, &keeper));
    CHECK_OK(mtiart_stream_create(0, 0, &other));
    void *k, *o;
    CHECK_OK(mtiart_malloc_async(keeper, 3 * MiB, &k));
    CHECK_OK(mtiart_free(k));
    CHECK_OK(mtiart_malloc_async(other, 3 * MiB, &o));
    CHECK(o != k);
    CHECK_OK(mtiart_free(o));
    CHECK_OK(mtiart_stream_destroy(keeper));
    CHECK_OK(mtiart_stream_destroy(other));
    CHECK_CLEAN();
}

/* Pool ids the runtime never issued are refused: a made-up id could be the one a later
 * default capture gets, and two graphs would share a pool unknowingly. */
static void test_pool_ids_must_be_issued(void) {
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    mtiart_pool_id issued;
    CHECK_OK(mtiart_stream_get_capture_info(s, NULL, NULL, &issued));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    mtiart_pool_id next = {issued.first + 1, 0};
    CHECK_STATUS(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, next),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK(strstr(mtiart_last_error_message(), "was never issued"));
    mtiart_pool_id handle;
    CHECK_OK(mtiart_pool_handle_create(&handle));
    CHECK_STATUS(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL,
                                             (mtiart_pool_id){0, handle.second + 1}),
                 MTIART_ERROR_INVALID_VALUE);
    mtiart_capture_status cs;
    CHECK_OK(mtiart_stream_get_capture_info(s, &cs, NULL, NULL));
    CHECK(cs == MTIART_CAPTURE_STATUS_NONE);
    /* The next default capture gets exactly the id that was refused: it was in no use. */
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    mtiart_pool_id fresh;
    CHECK_OK(mtiart_stream_get_capture_info(s, NULL, NULL, &fresh));
    CHECK(fresh.first > issued.first && fresh.second == 0);
    mtiart_graph g2;
    CHECK_OK(mtiart_stream_end_capture(s, &g2));
    /* Issued ids are accepted, also once their pool is gone. */
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, issued));
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, handle));
    mtiart_graph g3;
    CHECK_OK(mtiart_stream_end_capture(s, &g3));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_graph_destroy(g2));
    CHECK_OK(mtiart_graph_destroy(g3));
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_CLEAN();
}

/* ------------------------------------------------------------------ threads */

typedef struct alloc_thread {
    int index;
    int failed;
    uint64_t ops;
} alloc_thread;

static void *alloc_worker(void *arg) {
    alloc_thread *t = arg;
    mtiart_stream s;
    if (mtiart_stream_create(0, 0, &s)) {
        t->failed = 1;
        return NULL;
    }
    uint32_t seed = 1234u + (uint32_t)t->index * 7919u;
    enum { LIVE = 32 };
    struct {
        uint8_t *p;
        size_t n;
        uint8_t tag;
    } live[LIVE];
    memset(live, 0, sizeof live);
    double end = now_ms() + 700;
    while (now_ms() < end) {
        seed = seed * 1103515245u + 12345u;
        int slot = (int)((seed >> 8) % LIVE);
        if (live[slot].p) {
            /* Nobody else wrote into our block. */
            for (size_t i = 0; i < live[slot].n; i += 61)
                if (live[slot].p[i] != live[slot].tag) t->failed = 1;
            if (mtiart_free(live[slot].p)) t->failed = 1;
            live[slot].p = NULL;
        } else {
            size_t n = 1 + (seed >> 12) % ((seed & 1) ? 4096 : 300000);
            void *p;
            mtiart_status st = mtiart_malloc_async(s, n, &p);
            if (st == MTIART_ERROR_OUT_OF_MEMORY) continue;
            if (st) {
                t->failed = 1;
                continue;
            }
            live[slot].p = p;
            live[slot].n = n;
            live[slot].tag = (uint8_t)(t->index * 16 + slot);
            /* Host code may touch device memory directly when no stream uses it. */
            memset(p, live[slot].tag, n);
        }
        t->ops++;
    }
    for (int i = 0; i < LIVE; i++)
        if (live[i].p && mtiart_free(live[i].p)) t->failed = 1;
    if (mtiart_stream_destroy(s)) t->failed = 1;
    return NULL;
}

static void test_threads(void) {
    enum { T = 4 };
    pthread_t th[T];
    alloc_thread ctx[T];
    for (int i = 0; i < T; i++) {
        ctx[i] = (alloc_thread){i, 0, 0};
        pthread_create(&th[i], NULL, alloc_worker, &ctx[i]);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECK(!ctx[i].failed);
        CHECK(ctx[i].ops > 100);
    }
    CHECK_CLEAN();
}

/* ------------------------------------------------------------------ stream caches */

/* Free blocks of the snapshot in segments of stream `stream_id`. */
static size_t free_blocks_of(uint64_t stream_id) {
    size_t n = 0, count = 0;
    CHECK_OK(mtiart_memory_snapshot(0, NULL, 0, &n));
    mtiart_block_info *all = calloc(n + 1, sizeof *all);
    CHECK_OK(mtiart_memory_snapshot(0, all, n + 1, &n));
    for (size_t i = 0; i < n; i++)
        count += all[i].stream_id == stream_id && all[i].state == MTIART_BLOCK_FREE;
    free(all);
    return count;
}

/* A block freed on its stream is that stream's again at once, for a request of its size,
 * and counts as free memory in every figure meanwhile. */
static void test_cache_reuse_and_stats(void) {
    CHECK_CLEAN();
    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    CHECK_OK(mtiart_memory_reset_peak_stats(0));
    CHECK_OK(mtiart_memory_reset_accumulated_stats(0));
    void *p, *keep;
    CHECK_OK(mtiart_malloc_async(s, 1000, &p));
    CHECK_OK(mtiart_malloc_async(s, 4096, &keep));
    CHECK_OK(mtiart_free(p));
    mtiart_memory_stats st = stats();
    CHECK(st.allocated_bytes == 4096 && st.requested_bytes == 4096);
    CHECK(st.active_blocks == 1 && st.active_bytes == 4096);
    CHECK(st.reserved_bytes == 2 * MiB && st.segments == 1);
    CHECK(st.alloc_requests == 2 && st.free_requests == 1);
    /* Free pieces of the segment: the freed block (merged with nothing: its neighbour is
     * live) and the segment's rest. */
    CHECK(st.inactive_split_blocks == 2);
    CHECK(st.inactive_split_bytes == 2 * MiB - 4096);
    CHECK(block_at(p).state == MTIART_BLOCK_FREE);
    mtiart_pool_info info;
    CHECK_OK(mtiart_pool_get_info(0, (mtiart_pool_id){0, 0}, &info));
    CHECK(info.allocated_bytes == 4096 && info.active_blocks == 1);
    /* Freed memory is no allocation: every check refuses it. */
    CHECK_STATUS(mtiart_free(p), MTIART_ERROR_INVALID_POINTER);
    CHECK(strstr(mtiart_last_error_message(), "double free") != NULL);
    CHECK_STATUS(mtiart_record_stream(p, s), MTIART_ERROR_INVALID_POINTER);
    int device;
    CHECK_STATUS(mtiart_pointer_get_device(p, &device), MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(launch_add_i64(s, p, 1), MTIART_ERROR_INVALID_POINTER);
    /* The same rounded size on the same stream: the same block, counted again. */
    void *q;
    CHECK_OK(mtiart_malloc_async(s, 1024, &q));
    CHECK(q == p);
    st = stats();
    CHECK(st.allocated_bytes == 5120 && st.requested_bytes == 5120 && st.active_blocks == 2);
    CHECK(st.allocated_bytes_peak == 5120 && st.active_blocks_peak == 2);
    CHECK(block_at(q).state == MTIART_BLOCK_ACTIVE && block_at(q).requested_size == 1024);
    CHECK_OK(launch_add_i64(s, q, 1));
    CHECK_OK(mtiart_stream_synchronize(s));
    /* Peaks count what is allocated, not what the stream keeps: freeing 1 KiB and asking
     * for 2 KiB peaks at 6 KiB. */
    CHECK_OK(mtiart_free(q));
    void *r;
    CHECK_OK(mtiart_malloc_async(s, 2048, &r));
    CHECK(stats().allocated_bytes_peak == 6144);
    /* The only live block gone, the segment counts as wholly free, as it will be. */
    CHECK_OK(mtiart_free(r));
    CHECK_OK(mtiart_free(keep));
    st = stats();
    CHECK(st.allocated_bytes == 0 && st.active_blocks == 0 && st.requested_bytes == 0);
    CHECK(st.inactive_split_blocks == 0 && st.inactive_split_bytes == 0);
    CHECK(st.alloc_requests == 4 && st.free_requests == 4);
    CHECK_OK(mtiart_pool_get_info(0, (mtiart_pool_id){0, 0}, &info));
    CHECK(info.allocated_bytes == 0 && info.active_blocks == 0);
    /* empty_cache gives the stream's kept blocks back with the rest. */
    CHECK_OK(mtiart_empty_cache(0));
    CHECK(stats().reserved_bytes == 0);
    CHECK_OK(mtiart_stream_destroy(s));
    CHECK_CLEAN();
}

/* What a stream keeps is for it alone, for no more than a few blocks, and never makes it
 * reserve memory its kept blocks could give. */
static void test_cache_bounds(void) {
    mtiart_stream s1, s2;
    CHECK_OK(mtiart_stream_create(0, 0, &s1));
    CHECK_OK(mtiart_stream_create(0, 0, &s2));
    /* Another stream never gets a block s1 freed while s1's heap has it. */
    void *p, *q;
    CHECK_OK(mtiart_malloc_async(s1, 8192, &p));
    CHECK_OK(mtiart_free(p));
    CHECK_OK(mtiart_malloc_async(s2, 8192, &q));
    CHECK(q != p);
    CHECK(block_at(q).stream_id != block_at(p).stream_id);
    CHECK_OK(mtiart_free(q));
    /* Many sizes freed in turn: the kept blocks do not pile up. */
    for (size_t kib = 1; kib <= 64; kib++) {
        void *x;
        CHECK_OK(mtiart_malloc_async(s1, kib * 1024, &x));
        CHECK_OK(mtiart_free(x));
    }
    CHECK(stats().allocated_bytes == 0 && stats().segments == 2); /* one per stream */
    CHECK(free_blocks_of(block_at(p).stream_id) <= 17);
    CHECK_OK(mtiart_empty_cache(0));
    /* A request none of the kept blocks fits takes their merged memory rather than a new
     * segment. */
    void *a, *b, *c;
    CHECK_OK(mtiart_malloc_async(s1, MiB, &a));
    CHECK_OK(mtiart_malloc_async(s1, MiB, &b));
    CHECK(stats().segments == 1);
    CHECK_OK(mtiart_free(a));
    CHECK_OK(mtiart_free(b));
    CHECK_OK(mtiart_malloc_async(s1, 512 * 1024, &c));
    CHECK(stats().segments == 1);
    CHECK_OK(mtiart_free(c));
    /* A destroyed stream's kept blocks go back to its heap, merged. */
    void *y, *z;
    CHECK_OK(mtiart_malloc_async(s2, 4096, &y));
    CHECK_OK(mtiart_malloc_async(s2, 8192, &z));
    CHECK_OK(mtiart_free(y));
    CHECK_OK(mtiart_free(z));
    CHECK_OK(mtiart_stream_destroy(s2));
    CHECK(block_at(y).size == 2 * MiB && block_at(y).state == MTIART_BLOCK_FREE);
    CHECK_OK(mtiart_stream_destroy(s1));
    CHECK_CLEAN();
}

/* The out-of-memory retry gives back what streams keep before it gives up. */
static void test_cache_drained_before_oom(void) {
    mtiart_stream s1, s2;
    CHECK_OK(mtiart_stream_create(0, 0, &s1));
    CHECK_OK(mtiart_stream_create(0, 0, &s2));
    enum { N = 60 };
    void *p[N];
    for (int i = 0; i < N; i++) CHECK_OK(mtiart_malloc_async(s1, MiB, &p[i]));
    for (int i = 0; i < N; i++) CHECK_OK(mtiart_free(p[i])); /* the last ones kept by s1 */
    CHECK_OK(mtiart_memory_reset_accumulated_stats(0));
    CHECK(stats().reserved_bytes == N * MiB);
    /* Fits only once every one of s1's segments is released. */
    void *big;
    CHECK_OK(mtiart_malloc_async(s2, CAPACITY - 2 * MiB, &big));
    mtiart_memory_stats st = stats();
    CHECK(st.num_alloc_retries == 1 && st.num_ooms == 0);
    CHECK(st.reserved_bytes == CAPACITY - 2 * MiB);
    CHECK_OK(mtiart_free(big));
    CHECK_OK(mtiart_stream_destroy(s1));
    CHECK_OK(mtiart_stream_destroy(s2));
    CHECK_CLEAN();
}

/* Blocks with something left to wait for are never kept: a graph's (held until the graph
 * goes), another stream's work (record_stream, free_async on it). */
static void test_cache_respects_uses(void) {
    mtiart_stream s1, s2;
    CHECK_OK(mtiart_stream_create(0, 0, &s1));
    CHECK_OK(mtiart_stream_create(0, 0, &s2));
    /* A graph uses it: held, and another request of its size on its stream gets other
     * memory. */
    int64_t *p, *q;
    CHECK_OK(mtiart_malloc_async(s1, 4096, (void **)&p));
    mtiart_graph g;
    CHECK_OK(mtiart_graph_create(0, &g));
    mtiart_arg args[2] = {{MTIART_ARG_BUFFER_INOUT, 0, p, sizeof(int64_t)},
                          {MTIART_ARG_VALUE, sizeof(int64_t), &(int64_t){1}, 0}};
    size_t node;
    CHECK_OK(mtiart_graph_add_kernel_node(g, NULL, 0, k_add_i64, 1, args, 2, &node));
    CHECK_OK(mtiart_free(p));
    CHECK(block_at(p).state == MTIART_BLOCK_GRAPH_HELD);
    CHECK_OK(mtiart_malloc_async(s1, 4096, (void **)&q));
    CHECK(q != p);
    CHECK_OK(mtiart_free(q));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK(block_at(p).state == MTIART_BLOCK_FREE);
    /* Another stream's work on it: pending until that work is done. */
    gate gt = {0};
    launch_gate(s2, &gt);
    CHECK_OK(mtiart_malloc_async(s1, 4096, (void **)&p));
    CHECK_OK(mtiart_record_stream(p, s2));
    CHECK_OK(mtiart_free(p));
    CHECK(block_at(p).state == MTIART_BLOCK_PENDING_FREE);
    CHECK_OK(mtiart_malloc_async(s1, 4096, (void **)&q));
    CHECK(q != p);
    CHECK_OK(mtiart_free_async(q, s2)); /* ordered after s2's work: pending as well */
    CHECK(block_at(q).state == MTIART_BLOCK_PENDING_FREE);
    atomic_store(&gt.open, 1);
    CHECK_OK(mtiart_stream_synchronize(s2));
    void *r;
    CHECK_OK(mtiart_malloc_async(s1, 4096, &r)); /* settles the pending frees */
    CHECK(block_at(p).state != MTIART_BLOCK_PENDING_FREE || r == p);
    CHECK_OK(mtiart_free(r));
    /* Freed on its own stream with free_async: its stream's again at once. */
    CHECK_OK(mtiart_malloc_async(s1, 4096, (void **)&p));
    CHECK_OK(mtiart_free_async(p, s1));
    CHECK_OK(mtiart_malloc_async(s1, 4096, (void **)&q));
    CHECK(q == p);
    CHECK_OK(mtiart_free(q));
    /* A capture on the stream allocates from its graph's pool, never from what the stream
     * keeps. */
    CHECK_OK(mtiart_malloc_async(s1, 4096, (void **)&p));
    CHECK_OK(mtiart_free(p));
    CHECK_OK(mtiart_stream_begin_capture(s1, MTIART_CAPTURE_MODE_RELAXED, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_malloc_async(s1, 4096, (void **)&q));
    CHECK(q != p);
    mtiart_block_info bq = block_at(q);
    CHECK(bq.pool.first != 0 || bq.pool.second != 0);
    CHECK_OK(mtiart_free(q));
    CHECK_OK(mtiart_stream_end_capture(s1, &g));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_stream_destroy(s1));
    CHECK_OK(mtiart_stream_destroy(s2));
    CHECK_CLEAN();
}

/* Threads allocating on one stream, freeing each other's blocks, and others emptying the
 * cache and reading the statistics meanwhile. */
typedef struct shared_stream_ctx {
    mtiart_stream s;
    _Atomic(void *) exchange[8];
    atomic_int stop;
    atomic_int failed;
    atomic_long mallocs, frees; /* calls made, frees done */
} shared_stream_ctx;

static void *shared_stream_worker(void *arg) {
    shared_stream_ctx *c = arg;
    uint32_t seed = (uint32_t)(uintptr_t)&seed;
    while (!atomic_load(&c->stop)) {
        seed = seed * 1103515245u + 12345u;
        size_t n = 512 * (1 + (seed >> 16) % 8);
        void *p;
        mtiart_status st = mtiart_malloc_async(c->s, n, &p);
        atomic_fetch_add(&c->mallocs, 1);
        if (st == MTIART_ERROR_OUT_OF_MEMORY) continue;
        if (st) {
            atomic_store(&c->failed, 1);
            break;
        }
        memset(p, 0x5a, n);
        /* Half of them freed here, half left for another thread to free. */
        void *old = p;
        if (!(seed & 1)) old = atomic_exchange(&c->exchange[(seed >> 8) % 8], p);
        if (!old) continue;
        if (mtiart_free(old)) atomic_store(&c->failed, 1);
        else atomic_fetch_add(&c->frees, 1);
    }
    return NULL;
}

static void *shared_stream_observer(void *arg) {
    shared_stream_ctx *c = arg;
    for (int i = 0; !atomic_load(&c->stop); i++) {
        mtiart_memory_stats st;
        if (mtiart_memory_get_stats(0, &st) || st.allocated_bytes > st.reserved_bytes)
            atomic_store(&c->failed, 1);
        if (i % 16 == 0 && mtiart_empty_cache(0)) atomic_store(&c->failed, 1);
    }
    return NULL;
}

static void test_cache_threads(void) {
    shared_stream_ctx c;
    memset(&c, 0, sizeof c);
    CHECK_OK(mtiart_stream_create(0, 0, &c.s));
    CHECK_OK(mtiart_memory_reset_accumulated_stats(0));
    enum { T = 3 };
    pthread_t th[T + 1];
    for (int i = 0; i < T; i++) pthread_create(&th[i], NULL, shared_stream_worker, &c);
    pthread_create(&th[T], NULL, shared_stream_observer, &c);
    sleep_ms(getenv("MTIART_STRESS_QUICK") ? 150 : 500);
    atomic_store(&c.stop, 1);
    for (int i = 0; i <= T; i++) pthread_join(th[i], NULL);
    CHECK(!atomic_load(&c.failed));
    for (int i = 0; i < 8; i++) {
        void *p = atomic_load(&c.exchange[i]);
        if (p) CHECK_OK(mtiart_free(p));
        if (p) c.frees++;
    }
    mtiart_memory_stats st = stats();
    CHECK(st.allocated_bytes == 0 && st.active_blocks == 0 && st.requested_bytes == 0);
    CHECK(st.alloc_requests == (uint64_t)c.mallocs && st.free_requests == (uint64_t)c.frees);
    CHECK(c.frees > 10);
    CHECK_OK(mtiart_stream_destroy(c.s));
    CHECK_CLEAN();
}

int main(void) {
    /* Before the first libmtiart call: the capacity is read at initialisation. */
    setenv("MTIART_DEVICE_MEMORY", "64M", 1);
    /* What is reused when is the subject here: no quarantine of freed blocks under valgrind
     * (tests/valgrind checks the quarantine). */
    setenv("MTIART_VALGRIND_QUARANTINE", "0", 1);
    CHECK_OK(mtiart_init());
    test_rounding();
    test_reuse_and_split();
    test_large();
    test_stats_and_peaks();
    test_capacity_oom();
    test_release_and_retry();
    test_invalid_frees();
    test_record_stream();
    test_free_with_pending_work();
    test_free_async();
    test_pools();
    test_snapshot();
    test_many_streams();
    test_dead_streams_memory_reused();
    test_pool_ids_must_be_issued();
    test_threads();
    test_cache_reuse_and_stats();
    test_cache_bounds();
    test_cache_drained_before_oom();
    test_cache_respects_uses();
    test_cache_threads();
    TEST_MAIN_END();
}
