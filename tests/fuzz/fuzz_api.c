/*
 * fuzz_api - drives random sequences of libmtiart API calls, valid and invalid, and checks
 * that the runtime never crashes, answers each misuse with the documented status, and
 * leaves nothing behind (every block, segment and private pool is gone after teardown).
 *
 * Each input is a byte string decoded into up to FZ_MAX_OPS operations on a small world of
 * streams, events, graphs, executables and device pointers: creation and destruction
 * (twice, too), stale and random handles, double and interior frees, huge sizes, random
 * pool ids, kernels and copies that fit or overrun their blocks, kernels that fail, captures
 * begun twice, ended on the wrong stream, invalidated by synchronizing, forked and joined
 * over events (and forked streams destroyed), external event records, conditional bodies,
 * graph launches (captured as child graphs too), hand-built graphs of every node kind,
 * executables updated from other graphs, record_stream.
 *
 * The harness keeps to the contract the runtime cannot check (like CUDA, a block used on a
 * stream other than its own must be recorded there before it is freed; host buffers stay
 * valid). Graphs are replayed whatever was freed since their capture: they hold the memory
 * they use.
 *
 * Two builds of the same file:
 *   libFuzzer (clang):  -fsanitize=fuzzer[,address,undefined]   -> LLVMFuzzerTestOneInput
 *   standalone (any cc): main() below, see usage() - random inputs from a seeded PRNG for a
 *                        bounded time or count, or replays of input files (crash repros).
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mtiart.h"

#define FZ_MAX_OPS 160
#define FZ_STREAMS 6
#define FZ_EVENTS 6
#define FZ_GRAPHS 4
#define FZ_PTRS 24
#define FZ_HOST_BYTES 65536
#define FZ_GRAPH_PTRS 32

/* ------------------------------------------------------------------ input */

static const uint8_t *in_data;
static size_t in_size, in_pos;

static uint8_t u8(void) { return in_pos < in_size ? in_data[in_pos++] : 0; }
static uint32_t u32(void) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v = v << 8 | u8();
    return v;
}
static uint64_t u64(void) { return (uint64_t)u32() << 32 | u32(); }
static bool more(void) { return in_pos < in_size; }

/* ------------------------------------------------------------------ checks */

static const char *fz_op = "";
static int fz_step;
static uint64_t fz_ops_done;                            /* operations decoded, all inputs */
static uint64_t fz_graphs_made, fz_replays, fz_kernels; /* how deep the inputs got */

static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_api: step %d (%s): ", fz_step, fz_op);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    abort(); /* a crash the fuzzer records, with the input that caused it */
}

/* Every call returns a known status; a failure leaves a matching thread-local error. */
static int fz_trace = -1; /* FUZZ_TRACE=1: print every call (to debug a saved input) */

static mtiart_status chk(mtiart_status st, const char *what) {
    fz_op = what;
    if (fz_trace < 0) fz_trace = getenv("FUZZ_TRACE") && getenv("FUZZ_TRACE")[0] == '1';
    if (fz_trace) fprintf(stderr, "  %3d %-22s %s\n", fz_step, what, mtiart_status_name(st));
    if (st < MTIART_ERROR_INTERNAL || st > MTIART_NOT_READY)
        fail("status %d out of range", (int)st);
    if (st == MTIART_ERROR_INTERNAL) fail("internal error: %s", mtiart_last_error_message());
    if (st < 0) {
        if (mtiart_last_error() != st)
            fail("returned %s but last_error is %s", mtiart_status_name(st),
                 mtiart_status_name(mtiart_last_error()));
        const char *msg = mtiart_last_error_message();
        if (!msg || !msg[0]) fail("%s without a message", mtiart_status_name(st));
    }
    return st;
}

static void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void trace(const char *fmt, ...) {
    if (fz_trace <= 0) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "        ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

static void expect(mtiart_status st, mtiart_status want, const char *what) {
    chk(st, what);
    if (st != want)
        fail("got %s, expected %s (%s)", mtiart_status_name(st), mtiart_status_name(want),
             mtiart_last_error_message());
}

/* ------------------------------------------------------------------ world */

typedef struct {
    mtiart_stream h;
    bool live;
    uint64_t id;
    unsigned sink;
} fz_stream;
typedef struct {
    mtiart_event h;
    bool live;
} fz_event;
typedef struct {
    void *p;
    size_t size;
    bool live;
    uint32_t gen;        /* bumped by each allocation into the slot */
    int owner;           /* stream slot the block belongs to... */
    uint64_t owner_id;   /* ...while that slot holds this stream */
    mtiart_pool_id pool; /* (0,0): default pool */
} fz_ptr;
typedef struct {
    int slot;
    uint32_t gen;
} fz_use;
typedef struct {
    mtiart_graph g;
    mtiart_graph_exec x;
    bool graph_live, exec_live;
    bool checked; /* instantiated with the input check: a launch may refuse */
    mtiart_pool_id pool;
    fz_use uses[FZ_GRAPH_PTRS]; /* blocks the captured work touches */
    int num_ptrs;
    bool overflow; /* touched more than we track: never replayed */
} fz_graph;
typedef struct {
    bool active;
    int origin;
    unsigned sink;
    mtiart_pool_id pool;
    fz_use uses[FZ_GRAPH_PTRS];
    int num_ptrs;
    bool overflow;
} fz_capture;

static fz_stream streams[FZ_STREAMS]; /* slot 0: the default stream */
static fz_event events[FZ_EVENTS];
static fz_graph graphs[FZ_GRAPHS];
static fz_ptr ptrs[FZ_PTRS];
static fz_capture captures[FZ_STREAMS]; /* by origin slot */
static mtiart_pool_id pool_handles[2];
static uint64_t max_graph_pool_seen; /* the largest (n, 0) a capture was given */
/* Host memory: copies to the device read host_buf (never written); copies to the host
 * write a sink of their own - one per stream and per capture, never shared by work that
 * could run at the same time (so ThreadSanitizer sees no race of the harness's own). */
#define FZ_SINKS 128
static uint8_t host_buf[FZ_HOST_BYTES];
static uint8_t sinks[FZ_SINKS][FZ_HOST_BYTES];
static unsigned next_sink;
static int stream_capture[FZ_STREAMS]; /* origin slot of the capture a stream is in, or -1 */
static int scope_depth[FZ_STREAMS];    /* conditional bodies open on a capturing stream */

static mtiart_stream stale_stream; /* handles destroyed in earlier inputs */
static mtiart_event stale_event;

/* ------------------------------------------------------------------ kernels */

/* args: [0] uint8_t *dst (BUFFER_OUT), [1] uint64 bytes, [2] uint8 value, [3] int32 fail */
static int32_t fz_fill_kernel(void *const *args, uint32_t block, uint32_t num_blocks) {
    uint8_t *dst = *(uint8_t **)args[0];
    uint64_t bytes = *(const uint64_t *)args[1];
    uint8_t value = *(const uint8_t *)args[2];
    int32_t fail_code = *(const int32_t *)args[3];
    uint64_t chunk = (bytes + num_blocks - 1) / num_blocks;
    uint64_t begin = chunk * block, end = begin + chunk < bytes ? begin + chunk : bytes;
    /* Relaxed atomic stores: two streams may write one block without ordering (a race of
     * the user's data, which the runtime does not promise to order), and ThreadSanitizer
     * must only ever see the runtime's own races. */
    for (uint64_t i = begin; i < end; i++) __atomic_store_n(&dst[i], value, __ATOMIC_RELAXED);
    if (fail_code && block == 0) {
        mtiart_kernel_set_error_message("fuzz kernel failing on purpose");
        return fail_code;
    }
    return 0;
}

static int32_t fz_host_fn(void *user_data) { return user_data ? 3 : 0; }

/* ------------------------------------------------------------------ helpers */

static int pick(int n) { return (int)(u8() % (unsigned)n); }

/* Mostly a live pointer (when there is one), sometimes any slot: freed or never used. */
static int pick_ptr(void) {
    int r = u8(), live[FZ_PTRS], n = 0;
    for (int i = 0; i < FZ_PTRS; i++)
        if (ptrs[i].live) live[n++] = i;
    if (n && r % 8) return live[(r / 8) % n];
    return r % FZ_PTRS;
}

/* Mostly a graph slot that holds something. */
static int pick_graph(void) {
    int r = u8(), used[FZ_GRAPHS], n = 0;
    for (int i = 0; i < FZ_GRAPHS; i++)
        if (graphs[i].graph_live || graphs[i].exec_live) used[n++] = i;
    if (n && r % 4) return used[(r / 4) % n];
    return r % FZ_GRAPHS;
}

static int capture_of(int slot) { return slot >= 0 ? stream_capture[slot] : -1; }

/* Where a copy to the host enqueued on stream `slot` (now) may write. */
static uint8_t *sink_of(int slot) {
    int c = capture_of(slot);
    return sinks[c >= 0 ? captures[c].sink : streams[slot].sink];
}

static bool any_capture(void) {
    for (int i = 0; i < FZ_STREAMS; i++)
        if (captures[i].active) return true;
    return false;
}

/* Remember that the capture of stream `slot` touched pointer `pi`. */
static void note_use(int slot, int pi) {
    int c = capture_of(slot);
    if (c < 0) return;
    fz_capture *cap = &captures[c];
    for (int i = 0; i < cap->num_ptrs; i++)
        if (cap->uses[i].slot == pi && cap->uses[i].gen == ptrs[pi].gen) return;
    if (cap->num_ptrs == FZ_GRAPH_PTRS) cap->overflow = true;
    else cap->uses[cap->num_ptrs++] = (fz_use){pi, ptrs[pi].gen};
}

/* Add the blocks graph `from` touches to `uses` (a capture's or a graph's). */
static void merge_uses(fz_use *uses, int *num, bool *overflow, const fz_graph *from) {
    *overflow |= from->overflow;
    for (int i = 0; i < from->num_ptrs; i++) {
        bool seen = false;
        for (int k = 0; k < *num && !seen; k++)
            seen = uses[k].slot == from->uses[i].slot && uses[k].gen == from->uses[i].gen;
        if (seen) continue;
        if (*num == FZ_GRAPH_PTRS) *overflow = true;
        else uses[(*num)++] = from->uses[i];
    }
}

/* A block used on a stream other than its own is recorded there (torch's contract). */
static bool use_on(int pi, int slot) {
    fz_ptr *p = &ptrs[pi];
    if (p->owner == slot && p->owner_id == streams[slot].id) return true;
    trace("record_stream ptr %d on stream %d", pi, slot);
    return chk(mtiart_record_stream(p->p, streams[slot].h), "record_stream") == MTIART_SUCCESS;
}

static mtiart_stream stream_arg(int *slot) {
    int r = u8() % 32, live[FZ_STREAMS], n = 0;
    *slot = -1;
    if (r == 30) return stale_stream;
    if (r == 31) return (mtiart_stream)(uintptr_t)u64(); /* random handle value */
    for (int i = 0; i < FZ_STREAMS; i++)
        if (streams[i].live) live[n++] = i;
    *slot = r < 24 ? live[r % n] : r % FZ_STREAMS; /* mostly live ones; slot 0 always is */
    return streams[*slot].h;
}

/* The size of the block at p (its request rounded up, plus any unsplit tail): accesses
 * up to it pass the runtime's range checks. 0 if p is no live block. */
static uint64_t block_size_of(const void *p) {
    static mtiart_block_info info[4096];
    size_t n = 0;
    expect(mtiart_memory_snapshot(0, info, 4096, &n), MTIART_SUCCESS, "snapshot");
    for (size_t i = 0; i < n && i < 4096; i++)
        if (info[i].address == (uint64_t)(uintptr_t)p && info[i].state == MTIART_BLOCK_ACTIVE)
            return info[i].size;
    return 0;
}

static bool same_pool(mtiart_pool_id a, mtiart_pool_id b) {
    return a.first == b.first && a.second == b.second;
}

static mtiart_pool_id pool_arg(void) {
    switch (u8() % 6) {
    case 0:
    case 1: return (mtiart_pool_id){0, 0};
    case 2: return pool_handles[0];
    case 3: return pool_handles[1];
    case 4: return (mtiart_pool_id){u8() % 4, u8() % 4}; /* (a, b) with both set is invalid */
    default: return (mtiart_pool_id){u64(), 0};
    }
}

static size_t size_arg(void) {
    switch (u8() % 8) {
    case 0: return 0;
    case 1: return (size_t)u64();                 /* huge */
    case 2: return (size_t)(u32() % (64u << 20)); /* up to 64 MiB: large segments */
    case 3: return (size_t)(1u << 20) + u8();     /* around the small/large boundary */
    default: return 1 + u32() % 8192;
    }
}

/* ------------------------------------------------------------------ operations */

static void op_stream(void) {
    int slot = 1 + pick(FZ_STREAMS - 1);
    fz_stream *s = &streams[slot];
    if (!s->live) {
        int prio = (int)(int8_t)u8();
        uint32_t flags = u8() % 3; /* 2 is no flag */
        mtiart_status st =
            chk(mtiart_stream_create_with_flags(0, prio, flags, &s->h), "stream_create");
        if (flags > MTIART_STREAM_NON_BLOCKING && st != MTIART_ERROR_INVALID_VALUE)
            fail("stream with unknown flags: %s", mtiart_status_name(st));
        if (st == MTIART_SUCCESS) {
            s->live = true;
            s->sink = next_sink++ % FZ_SINKS;
            chk(mtiart_stream_get_id(s->h, &s->id), "stream_get_id");
            stream_capture[slot] = -1;
            scope_depth[slot] = 0;
        }
        return;
    }
    mtiart_status st = chk(mtiart_stream_destroy(s->h), "stream_destroy");
    trace("stream %d", slot);
    int c = capture_of(slot);
    if (st == MTIART_SUCCESS) {
        /* A stream forked into a capture goes once its work is joined back. */
        if (c == slot) fail("destroyed the stream a capture began on");
        if (c >= 0 && scope_depth[slot]) fail("destroyed a stream with a conditional body open");
        stream_capture[slot] = -1;
        s->live = false;
        stale_stream = s->h;
        expect(mtiart_stream_destroy(s->h), MTIART_ERROR_INVALID_HANDLE, "stream_destroy twice");
    } else if (c < 0) {
        fail("stream_destroy failed on an idle stream: %s", mtiart_last_error_message());
    } else if (st != MTIART_ERROR_NOT_PERMITTED) {
        fail("stream_destroy of a capturing stream: %s", mtiart_status_name(st));
    }
}

static void op_malloc(void) {
    int slot;
    mtiart_stream h = stream_arg(&slot);
    size_t size = size_arg();
    void *p = (void *)1;
    mtiart_status st = chk(mtiart_malloc_async(h, size, &p), "malloc_async");
    if (slot < 0 || !streams[slot].live) {
        if (st != MTIART_ERROR_INVALID_HANDLE) fail("malloc on a dead stream: %d", st);
        return;
    }
    if (st != MTIART_SUCCESS) {
        if (st != MTIART_ERROR_OUT_OF_MEMORY)
            fail("malloc of %zu: %s", size, mtiart_status_name(st));
        return;
    }
    if (size == 0) {
        if (p) fail("malloc of 0 bytes gave %p", p);
        return;
    }
    int pi = pick(FZ_PTRS);
    if (ptrs[pi].live) { /* the slot is busy: give this one back at once */
        expect(mtiart_free(p), MTIART_SUCCESS, "free new");
        return;
    }
    int c = capture_of(slot);
    trace("ptr %d = %p +%zu on stream %d, capture %d", pi, p, size, slot, c);
    ptrs[pi] = (fz_ptr){p,
                        size,
                        true,
                        ptrs[pi].gen + 1,
                        slot,
                        streams[slot].id,
                        c >= 0 ? captures[c].pool : (mtiart_pool_id){0, 0}};
    int dev = -1;
    expect(mtiart_pointer_get_device((char *)p + size - 1, &dev), MTIART_SUCCESS,
           "pointer_get_device");
    if (dev != 0) fail("pointer on device %d", dev);
}

static void op_free(void) {
    int pi = pick_ptr();
    fz_ptr *p = &ptrs[pi];
    switch (u8() % 8) {
    case 0: /* an interior pointer is never a block start */
        if (p->live && p->size > 1)
            expect(mtiart_free((char *)p->p + 1 + u8() % (p->size - 1)),
                   MTIART_ERROR_INVALID_POINTER, "free interior");
        return;
    case 1: /* host memory, or a random address */
        expect(mtiart_free(u8() & 1 ? (void *)host_buf : (void *)(uintptr_t)(u64() | 1)),
               MTIART_ERROR_INVALID_POINTER, "free foreign");
        return;
    default: break;
    }
    if (!p->p) {
        expect(mtiart_free(NULL), MTIART_SUCCESS, "free NULL");
        return;
    }
    if (!p->live) {
        /* Its memory may have been handed out again: only a free of an address nobody
         * holds now must fail. */
        for (int i = 0; i < FZ_PTRS; i++)
            if (ptrs[i].live && ptrs[i].p == p->p) return;
        expect(mtiart_free(p->p), MTIART_ERROR_INVALID_POINTER, "double free");
        return;
    }
    int slot;
    mtiart_stream on = u8() & 1 ? stream_arg(&slot) : NULL;
    if (on && !(slot >= 0 && streams[slot].live)) { /* on a dead stream: nothing is freed */
        expect(mtiart_free_async(p->p, on), MTIART_ERROR_INVALID_HANDLE, "free_async dead");
        return;
    }
    expect(on ? mtiart_free_async(p->p, on) : mtiart_free(p->p), MTIART_SUCCESS, "free");
    trace("ptr %d %p (stream %d, on %d)", pi, p->p, p->owner, on ? slot : -1);
    p->live = false;
}

static void op_kernel(void) {
    int slot;
    mtiart_stream h = stream_arg(&slot);
    int pi = pick_ptr();
    fz_ptr *p = &ptrs[pi];
    uint64_t bytes = 1 + u32() % 8192;
    uint32_t blocks = 1 + u8() % 6;
    uint8_t value = u8();
    int32_t fail_code = u8() % 16 == 0 ? 7 : 0;
    bool fits = p->live && bytes <= p->size;
    bool live_stream = slot >= 0 && streams[slot].live;
    if (p->live && live_stream && !use_on(pi, slot)) return;
    void *dst = p->live ? p->p : (void *)host_buf;
    mtiart_arg args[4] = {
        {MTIART_ARG_BUFFER_OUT, 0, dst, bytes},
        {MTIART_ARG_VALUE, sizeof bytes, &bytes, 0},
        {MTIART_ARG_VALUE, sizeof value, &value, 0},
        {MTIART_ARG_VALUE, sizeof fail_code, &fail_code, 0},
    };
    mtiart_status st =
        chk(mtiart_launch_kernel(h, fz_fill_kernel, blocks, args, 4), "launch_kernel");
    trace("stream %d ptr %d %p +%llu%s", slot, pi, dst, (unsigned long long)bytes,
          capture_of(slot) >= 0 ? " (captured)" : "");
    if (!live_stream) {
        if (st != MTIART_ERROR_INVALID_HANDLE) fail("kernel on a dead stream: %d", st);
        return;
    }
    if (!fits && st != MTIART_ERROR_INVALID_POINTER && st != MTIART_ERROR_CAPTURE_INVALIDATED &&
        !(st == MTIART_SUCCESS && p->live && bytes <= block_size_of(p->p)))
        fail("kernel overrunning its block: %s", mtiart_status_name(st));
    if (st == MTIART_SUCCESS) note_use(slot, pi);
    fz_kernels += st == MTIART_SUCCESS;
}

static void op_copy(void) {
    int slot;
    mtiart_stream h = stream_arg(&slot);
    if (slot < 0 || !streams[slot].live) {
        expect(mtiart_memset_async(h, host_buf, 0, 1), MTIART_ERROR_INVALID_HANDLE, "memset dead");
        return;
    }
    int pi = pick_ptr();
    fz_ptr *p = &ptrs[pi];
    size_t bytes = u8() % 4 == 0 ? (size_t)u64() : 1 + u32() % 4096;
    bool fits = p->live && bytes <= p->size && bytes <= FZ_HOST_BYTES;
#ifdef FZ_TSAN
    /* The runtime copies with plain memmove: under ThreadSanitizer only copies that must
     * be refused are made, so user data is only ever touched atomically (by kernels). */
    if (p->live) return;
#endif
    if (p->live && !use_on(pi, slot)) return; /* any size: a short copy may still fit */
    void *dev = p->live ? p->p : (void *)(uintptr_t)0x1000;
    mtiart_status st;
    switch (u8() % 4) {
    case 0:
        st = chk(
            mtiart_memcpy_async(h, dev, host_buf, fits ? bytes : 16, MTIART_MEMCPY_HOST_TO_DEVICE),
            "memcpy HtoD");
        if (!fits) bytes = 16, fits = p->live && p->size >= 16;
        break;
    case 1:
        /* DEFAULT infers the kind from the pointers: only with a real device pointer */
        st =
            chk(mtiart_memcpy_async(h, sink_of(slot), dev, fits ? bytes : 16,
                                    p->live ? MTIART_MEMCPY_DEFAULT : MTIART_MEMCPY_DEVICE_TO_HOST),
                "memcpy DtoH");
        if (!fits) bytes = 16, fits = p->live && p->size >= 16;
        break;
    case 2:
        st = chk(mtiart_memset_async(h, dev, u8(), bytes), "memset");
        fits = bytes == 0 || (p->live && bytes <= p->size);
        break;
    default: {
        uint64_t pattern = u64();
        uint32_t sizes[] = {1, 2, 4, 8, 3};
        uint32_t ps = sizes[u8() % 5];
        size_t count = bytes / (ps == 3 ? 1 : ps);
        st = chk(mtiart_fill_async(h, dev, &pattern, ps, count), "fill");
        if (ps == 3 && st != MTIART_ERROR_INVALID_VALUE) fail("fill with a 3-byte pattern");
        bytes = ps == 3 ? 0 : count * ps;
        fits = ps != 3 && (bytes == 0 || (p->live && bytes <= p->size));
        break;
    }
    }
    trace("stream %d ptr %d %p +%zu", slot, pi, dev, bytes);
    if (fits && st != MTIART_SUCCESS && st != MTIART_ERROR_CAPTURE_INVALIDATED)
        fail("copy that fits: %s (%s)", mtiart_status_name(st), mtiart_last_error_message());
    if (!fits && st == MTIART_SUCCESS && bytes && !(p->live && bytes <= block_size_of(p->p)))
        fail("copy overrunning its block succeeded");
    if (st == MTIART_SUCCESS) note_use(slot, pi);
}

static void op_event(void) {
    int ei = pick(FZ_EVENTS);
    fz_event *e = &events[ei];
    int slot;
    mtiart_stream h = stream_arg(&slot);
    bool live_stream = slot >= 0 && streams[slot].live;
    switch (u8() % 7) {
    case 0:
        if (e->live) {
            expect(mtiart_event_destroy(e->h), MTIART_SUCCESS, "event_destroy");
            e->live = false;
            stale_event = e->h;
            expect(mtiart_event_destroy(e->h), MTIART_ERROR_INVALID_HANDLE, "event_destroy twice");
        } else {
            expect(mtiart_event_create(u8() % 4, &e->h), MTIART_SUCCESS, "event_create");
            e->live = true;
        }
        return;
    case 1:
    case 2: {
        uint32_t flags = u8() % 5; /* external now and then, once in a while an unknown flag */
        flags = flags == 4 ? 6 : flags == 3 ? MTIART_EVENT_RECORD_EXTERNAL : 0;
        mtiart_status st = chk(
            mtiart_event_record_with_flags(e->live ? e->h : stale_event, h, flags), "event_record");
        trace("event %d on stream %d", ei, slot);
        if ((!e->live || !live_stream) && st != MTIART_ERROR_INVALID_HANDLE)
            fail("record with a dead handle: %d", st);
        if (e->live && live_stream && flags == 6 && st != MTIART_ERROR_INVALID_VALUE)
            fail("record with unknown flags: %s", mtiart_status_name(st));
        return;
    }
    case 3:
    case 4: {
        int before = capture_of(slot);
        mtiart_status st =
            chk(mtiart_stream_wait_event(h, e->live ? e->h : stale_event), "stream_wait_event");
        trace("stream %d event %d", slot, ei);
        if ((!e->live || !live_stream) && st != MTIART_ERROR_INVALID_HANDLE)
            fail("wait with a dead handle: %d", st);
        if (st == MTIART_SUCCESS && live_stream && before < 0) {
            /* waiting on an event of a capture joins that capture */
            mtiart_capture_status cs;
            uint64_t id;
            mtiart_pool_id pool;
            expect(mtiart_stream_get_capture_info(h, &cs, &id, &pool), MTIART_SUCCESS,
                   "capture_info");
            if (cs != MTIART_CAPTURE_STATUS_NONE) {
                for (int c = 0; c < FZ_STREAMS; c++)
                    if (captures[c].active && same_pool(captures[c].pool, pool)) {
                        mtiart_capture_status os;
                        uint64_t oid;
                        chk(mtiart_stream_get_capture_info(streams[captures[c].origin].h, &os, &oid,
                                                           NULL),
                            "ci");
                        if (oid == id) stream_capture[slot] = c;
                    }
                if (stream_capture[slot] < 0) fail("joined an unknown capture");
            }
        }
        return;
    }
    case 5: chk(mtiart_event_query(e->live ? e->h : stale_event), "event_query"); return;
    default: {
        float ms;
        chk(mtiart_event_elapsed_time(e->h, events[pick(FZ_EVENTS)].h, &ms), "elapsed_time");
        return;
    }
    }
}

/* Keep a new graph in slot gi (what was there goes). */
static void put_graph(int gi, const fz_graph *g) {
    fz_graph *fg = &graphs[gi];
    if (fg->graph_live) expect(mtiart_graph_destroy(fg->g), MTIART_SUCCESS, "graph_destroy");
    if (fg->exec_live) expect(mtiart_graph_exec_destroy(fg->x), MTIART_SUCCESS, "exec_destroy");
    *fg = *g;
}

static void forget_capture(int c) {
    captures[c].active = false;
    for (int i = 0; i < FZ_STREAMS; i++)
        if (stream_capture[i] == c) {
            stream_capture[i] = -1;
            scope_depth[i] = 0;
        }
}

/* A conditional body on a capturing stream: IF only (a WHILE body here would have no one
 * to clear its flag), on a flag that is a block of the capture's, or any pointer. */
static void op_conditional(int slot, mtiart_stream h, bool live_stream) {
    int c = capture_of(slot);
    if (u8() & 1) {
        int pi = pick_ptr();
        fz_ptr *p = &ptrs[pi];
        uint32_t size = 1u << (u8() % 4);
        const void *flag = p->live ? p->p : (const void *)host_buf;
        mtiart_status st = chk(
            mtiart_stream_begin_conditional(h, MTIART_CONDITIONAL_IF, flag, size), "begin_cond");
        trace("stream %d ptr %d size %u", slot, pi, size);
        if (!live_stream) {
            if (st != MTIART_ERROR_INVALID_HANDLE) fail("begin_conditional on a dead stream");
            return;
        }
        if (st == MTIART_SUCCESS) {
            if (c < 0) fail("a conditional body outside a capture");
            if (!p->live || p->size < size) fail("a conditional on memory it may not read");
            scope_depth[slot]++;
            note_use(slot, pi);
        } else if (c < 0 && p->live && p->size >= size && st != MTIART_ERROR_NOT_CAPTURING) {
            fail("begin_conditional off a capture: %s", mtiart_status_name(st));
        }
        return;
    }
    mtiart_status st = chk(mtiart_stream_end_conditional(h), "end_cond");
    trace("stream %d", slot);
    if (!live_stream) {
        if (st != MTIART_ERROR_INVALID_HANDLE) fail("end_conditional on a dead stream");
        return;
    }
    if (c < 0               ? st != MTIART_ERROR_NOT_CAPTURING
        : scope_depth[slot] ? st != MTIART_SUCCESS && st != MTIART_ERROR_CAPTURE_INVALIDATED &&
                                  st != MTIART_ERROR_OUT_OF_MEMORY
                            : st != MTIART_ERROR_NOT_PERMITTED)
        fail("end_conditional (capture %d, depth %d): %s", c, scope_depth[slot],
             mtiart_status_name(st));
    if (c >= 0 && scope_depth[slot]) scope_depth[slot]--;
}

static void op_capture(void) {
    int slot;
    mtiart_stream h = stream_arg(&slot);
    bool live_stream = slot >= 0 && streams[slot].live;
    if (u8() % 4 == 0) {
        op_conditional(slot, h, live_stream);
        return;
    }
    if (u8() & 1) {
        mtiart_pool_id pool = pool_arg();
        mtiart_capture_mode mode = (mtiart_capture_mode)(u8() % 4);
        mtiart_status st = chk(mtiart_stream_begin_capture(h, mode, pool), "begin_capture");
        trace("stream %d mode %d", slot, (int)mode);
        if (!live_stream) {
            if (st != MTIART_ERROR_INVALID_HANDLE) fail("begin_capture on a dead stream");
            return;
        }
        /* the first problem found is reported: mode, then capture state, then pool (an id
         * the runtime never issued is refused; of small ones the harness cannot tell) */
        mtiart_status want = MTIART_SUCCESS;
        bool maybe_issued = pool.second == 0 && pool.first > max_graph_pool_seen &&
                            pool.first < max_graph_pool_seen + 64;
        bool issued = (!pool.first && !pool.second) || same_pool(pool, pool_handles[0]) ||
                      same_pool(pool, pool_handles[1]) ||
                      (pool.second == 0 && pool.first <= max_graph_pool_seen);
        if (mode > MTIART_CAPTURE_MODE_RELAXED) want = MTIART_ERROR_INVALID_VALUE;
        else if (capture_of(slot) >= 0) want = MTIART_ERROR_ALREADY_CAPTURING;
        else if (pool.first && pool.second) want = MTIART_ERROR_INVALID_VALUE;
        else if (!issued) want = MTIART_ERROR_INVALID_VALUE;
        if (want == MTIART_ERROR_INVALID_VALUE && maybe_issued && st == MTIART_SUCCESS)
            want = MTIART_SUCCESS;
        if (st != want && !(want == MTIART_SUCCESS && st == MTIART_ERROR_OUT_OF_MEMORY))
            fail("begin_capture with mode %d, pool (%llu, %llu): %s, expected %s", (int)mode,
                 (unsigned long long)pool.first, (unsigned long long)pool.second,
                 mtiart_status_name(st), mtiart_status_name(want));
        if (st == MTIART_SUCCESS) {
            mtiart_pool_id actual;
            expect(mtiart_stream_get_capture_info(h, NULL, NULL, &actual), MTIART_SUCCESS,
                   "capture_info");
            if (actual.first > max_graph_pool_seen) max_graph_pool_seen = actual.first;
            captures[slot] = (fz_capture){
                .active = true, .origin = slot, .pool = actual, .sink = next_sink++ % FZ_SINKS};
            stream_capture[slot] = slot;
        }
        return;
    }
    mtiart_graph g;
    mtiart_status st = chk(mtiart_stream_end_capture(h, &g), "end_capture");
    trace("stream %d", slot);
    if (!live_stream) {
        if (st != MTIART_ERROR_INVALID_HANDLE) fail("end_capture on a dead stream");
        return;
    }
    int c = capture_of(slot);
    if (c < 0) {
        if (st != MTIART_ERROR_NOT_CAPTURING) fail("end_capture on an idle stream: %d", st);
        return;
    }
    if (c != slot) {
        if (st != MTIART_ERROR_CAPTURE_WRONG_STREAM) fail("end_capture on a joined stream: %d", st);
        return;
    }
    fz_capture cap = captures[c];
    bool open_body = false;
    for (int i = 0; i < FZ_STREAMS; i++) open_body |= stream_capture[i] == c && scope_depth[i];
    forget_capture(c);
    if (st != MTIART_SUCCESS) {
        if (st != MTIART_ERROR_CAPTURE_INVALIDATED && st != MTIART_ERROR_CAPTURE_UNJOINED)
            fail("end_capture: %s", mtiart_status_name(st));
        return;
    }
    if (open_body) fail("end_capture with a conditional body open succeeded");
    fz_graphs_made++;
    fz_graph made = {.g = g,
                     .graph_live = true,
                     .pool = cap.pool,
                     .num_ptrs = cap.num_ptrs,
                     .overflow = cap.overflow};
    memcpy(made.uses, cap.uses, sizeof cap.uses);
    put_graph(pick(FZ_GRAPHS), &made);
    mtiart_pool_id gp;
    expect(mtiart_graph_get_pool(g, &gp), MTIART_SUCCESS, "graph_get_pool");
    if (!same_pool(gp, cap.pool)) fail("graph pool differs from the capture's");
    size_t len;
    expect(mtiart_graph_to_dot(g, NULL, 0, &len), MTIART_SUCCESS, "to_dot");
}

/* Whether the harness can keep a replay to the contract: record the live blocks it uses on
 * the replay's stream (freed ones are held by the graph, or its own pool's). */
static bool replay_safe(fz_graph *fg) { return !fg->overflow; }

static void op_graph(void) {
    int gi = pick_graph();
    fz_graph *fg = &graphs[gi];
    int slot;
    mtiart_stream h = stream_arg(&slot);
    bool live_stream = slot >= 0 && streams[slot].live;
    int what = u8() % 9;
    if (what >= 6) what = fg->graph_live && !fg->exec_live ? 0 : 1; /* favour the deep paths */
    if (what == 5 && u8() % 2) what = 6;
    switch (what) {
    case 0:
        if (fg->exec_live || !fg->graph_live) { /* a second executable, or a bad handle */
            mtiart_graph_exec x2;
            expect(mtiart_graph_instantiate(fg->graph_live ? fg->g : (mtiart_graph)(uintptr_t)u64(),
                                            &x2),
                   fg->graph_live ? MTIART_SUCCESS : MTIART_ERROR_INVALID_HANDLE, "instantiate");
            if (fg->graph_live)
                expect(mtiart_graph_exec_destroy(x2), MTIART_SUCCESS, "exec_destroy");
            return;
        }
        if (u8() % 4 == 0) { /* unknown flag bits are refused */
            mtiart_graph_exec x2;
            expect(mtiart_graph_instantiate_with_flags(fg->g, 1ull << (3 + u8() % 61), &x2),
                   MTIART_ERROR_INVALID_VALUE, "instantiate unknown flags");
        }
        fg->checked = u8() & 1;
        expect(mtiart_graph_instantiate_with_flags(
                   fg->g, fg->checked ? MTIART_GRAPH_INSTANTIATE_CHECK_INPUT_LIVENESS : 0, &fg->x),
               MTIART_SUCCESS, "instantiate");
        fg->exec_live = true;
        return;
    case 1:
    case 2: {
        if (!fg->exec_live) {
            expect(mtiart_graph_launch((mtiart_graph_exec)(uintptr_t)u64(), h),
                   MTIART_ERROR_INVALID_HANDLE, "launch dead");
            return;
        }
        if (!live_stream || !replay_safe(fg)) return;
        for (int i = 0; i < fg->num_ptrs; i++) {
            fz_use *u = &fg->uses[i];
            if (ptrs[u->slot].live && ptrs[u->slot].gen == u->gen && !use_on(u->slot, slot)) return;
        }
        mtiart_status st = chk(mtiart_graph_launch(fg->x, h), "graph_launch");
        trace("graph %d on stream %d", gi, slot);
        fz_replays += st == MTIART_SUCCESS;
        int c = capture_of(slot);
        if (c < 0 && st != MTIART_SUCCESS && !(fg->checked && st == MTIART_ERROR_INVALID_POINTER))
            fail("graph_launch: %s", mtiart_last_error_message());
        /* A launch on a capturing stream is a child graph node of the capture. */
        if (c >= 0 && st == MTIART_SUCCESS)
            merge_uses(captures[c].uses, &captures[c].num_ptrs, &captures[c].overflow, fg);
        return;
    }
    case 5: {
        /* Update the executable from another graph: refused unless the structure matches;
         * then it may touch what either graph touches (replays already queued use the
         * old parameters). */
        fz_graph *from = &graphs[pick(FZ_GRAPHS)];
        if (!fg->exec_live || !from->graph_live) return;
        mtiart_update_info info;
        mtiart_status st = chk(mtiart_graph_exec_update(fg->x, from->g, &info), "exec_update");
        trace("graph %d from graph %d", gi, (int)(from - graphs));
        if (st == MTIART_SUCCESS) {
            if (info.result != MTIART_UPDATE_SUCCESS) fail("update succeeded with a reason");
            merge_uses(fg->uses, &fg->num_ptrs, &fg->overflow, from);
        } else if (st != MTIART_ERROR_INVALID_VALUE || info.result == MTIART_UPDATE_SUCCESS) {
            fail("exec_update: %s (result %d)", mtiart_status_name(st), (int)info.result);
        }
        return;
    }
    case 3:
        if (fg->graph_live) {
            expect(mtiart_graph_destroy(fg->g), MTIART_SUCCESS, "graph_destroy");
            fg->graph_live = false;
            expect(mtiart_graph_destroy(fg->g), MTIART_ERROR_INVALID_HANDLE, "graph_destroy twice");
        }
        return;
    case 4:
        if (fg->exec_live) {
            expect(mtiart_graph_exec_destroy(fg->x), MTIART_SUCCESS, "exec_destroy");
            fg->exec_live = false;
            expect(mtiart_graph_exec_destroy(fg->x), MTIART_ERROR_INVALID_HANDLE,
                   "exec_destroy twice");
        }
        return;
    default:
        if (fg->graph_live) {
            size_t n = 0, e;
            expect(mtiart_graph_get_node_count(fg->g, &n), MTIART_SUCCESS, "node_count");
            expect(mtiart_graph_get_edge_count(fg->g, &e), MTIART_SUCCESS, "edge_count");
            mtiart_node_info ni;
            size_t node = (size_t)u32();
            chk(mtiart_graph_get_node_info(fg->g, node, &ni), "node_info");
            if (n) {
                expect(mtiart_graph_get_node_info(fg->g, node % n, &ni), MTIART_SUCCESS,
                       "node_info");
                mtiart_buffer_use use;
                chk(mtiart_graph_get_node_buffer(fg->g, node % n, u8() % 3, &use), "node_buffer");
                size_t dep;
                chk(mtiart_graph_get_node_dependency(fg->g, node % n, u8() % 3, &dep), "node_dep");
            }
            char dot[256];
            size_t len;
            expect(mtiart_graph_to_dot(fg->g, dot, sizeof dot, &len), MTIART_SUCCESS, "to_dot");
            mtiart_graph clone;
            expect(mtiart_graph_clone(fg->g, &clone), MTIART_SUCCESS, "clone");
            expect(mtiart_graph_destroy(clone), MTIART_SUCCESS, "clone destroy");
        }
        return;
    }
}

static void note_built_use(fz_graph *g, int pi) {
    for (int i = 0; i < g->num_ptrs; i++)
        if (g->uses[i].slot == pi && g->uses[i].gen == ptrs[pi].gen) return;
    if (g->num_ptrs == FZ_GRAPH_PTRS) g->overflow = true;
    else g->uses[g->num_ptrs++] = (fz_use){pi, ptrs[pi].gen};
}

/* A graph built by hand: fills, copies and kernels on blocks (or refused, on stray
 * pointers and overruns), host functions, event records and waits, empty nodes, child
 * graphs and IF conditionals with other slots' graphs as bodies, random dependencies. */
static void op_build(void) {
    fz_graph built = {.graph_live = true};
    expect(mtiart_graph_create(0, &built.g), MTIART_SUCCESS, "graph_create");
    size_t nodes = 0;
    for (int i = 0, count = 1 + u8() % 8; i < count; i++) {
        size_t deps[2], nd = 0, node;
        if (nodes) deps[nd++] = u8() % nodes;
        if (nodes && u8() % 2) deps[nd++] = u8() % nodes;
        int pi = pick_ptr();
        fz_ptr *p = &ptrs[pi];
        size_t bytes = 1 + u32() % 4096;
        bool fits = p->live && bytes <= p->size && bytes <= FZ_HOST_BYTES;
        void *dev = p->live ? p->p : (void *)(uintptr_t)0x1000;
        fz_graph *other = &graphs[pick(FZ_GRAPHS)];
        mtiart_status st;
        int what = u8() % 8;
#ifdef FZ_TSAN
        if (what < 2 && p->live) what = 2; /* see op_copy: only kernels touch live data */
#endif
        switch (what) {
        case 0: {
            uint8_t pattern = u8();
            st = chk(mtiart_graph_add_fill_node(built.g, deps, nd, dev, &pattern, 1, bytes, &node),
                     "add_fill_node");
            break;
        }
        case 1:
            st = chk(mtiart_graph_add_memcpy_node(built.g, deps, nd, dev, host_buf, bytes,
                                                  MTIART_MEMCPY_HOST_TO_DEVICE, &node),
                     "add_memcpy_node");
            break;
        case 2: {
            uint64_t n = bytes;
            uint8_t value = u8();
            int32_t fail_code = u8() % 16 == 0 ? 9 : 0;
            mtiart_arg args[4] = {{MTIART_ARG_BUFFER_OUT, 0, dev, bytes},
                                  {MTIART_ARG_VALUE, sizeof n, &n, 0},
                                  {MTIART_ARG_VALUE, sizeof value, &value, 0},
                                  {MTIART_ARG_VALUE, sizeof fail_code, &fail_code, 0}};
            st = chk(mtiart_graph_add_kernel_node(built.g, deps, nd, fz_fill_kernel, 1 + u8() % 4,
                                                  args, 4, &node),
                     "add_kernel_node");
            break;
        }
        case 3:
            st = chk(mtiart_graph_add_host_node(built.g, deps, nd, fz_host_fn, NULL, &node),
                     "add_host_node");
            break;
        case 4: {
            fz_event *e = &events[pick(FZ_EVENTS)];
            mtiart_event eh = e->live ? e->h : stale_event;
            st = u8() % 2 ? chk(mtiart_graph_add_event_record_node(built.g, deps, nd, eh, &node),
                                "add_event_record_node")
                          : chk(mtiart_graph_add_event_wait_node(built.g, deps, nd, eh, &node),
                                "add_event_wait_node");
            if ((st == MTIART_SUCCESS) != e->live) fail("event node: %s", mtiart_status_name(st));
            break;
        }
        case 5:
            expect(st = mtiart_graph_add_empty_node(built.g, deps, nd, &node), MTIART_SUCCESS,
                   "add_empty_node");
            break;
        case 6:
            if (!other->graph_live) continue;
            expect(st = mtiart_graph_add_child_graph_node(built.g, deps, nd, other->g, &node),
                   MTIART_SUCCESS, "add_child_graph_node");
            merge_uses(built.uses, &built.num_ptrs, &built.overflow, other);
            break;
        default:
            if (!other->graph_live || !p->live || p->size < 4) continue;
            st = chk(mtiart_graph_add_conditional_node(built.g, deps, nd, MTIART_CONDITIONAL_IF,
                                                       p->p, 4, other->g, &node),
                     "add_conditional_node");
            if (st != MTIART_SUCCESS && st != MTIART_ERROR_NOT_SUPPORTED) /* a body's events */
                fail("add_conditional_node: %s", mtiart_last_error_message());
            if (st == MTIART_SUCCESS) {
                merge_uses(built.uses, &built.num_ptrs, &built.overflow, other);
                note_built_use(&built, pi);
            }
            break;
        }
        if (what <= 2) {
            trace("node %zu: kind %d ptr %d +%zu", nodes, what, pi, bytes);
            if (fits && st != MTIART_SUCCESS)
                fail("a node that fits: %s (%s)", mtiart_status_name(st),
                     mtiart_last_error_message());
            if (!fits && st == MTIART_SUCCESS && !(p->live && bytes <= block_size_of(p->p)))
                fail("a node overrunning its block was added");
            if (st == MTIART_SUCCESS) note_built_use(&built, pi);
        }
        if (st == MTIART_SUCCESS && node != nodes++)
            fail("node index %zu, expected %zu", node, nodes);
    }
    size_t n = 0;
    expect(mtiart_graph_get_node_count(built.g, &n), MTIART_SUCCESS, "node_count");
    if (n != nodes) fail("graph has %zu nodes, %zu were added", n, nodes);
    fz_graphs_made++;
    put_graph(pick(FZ_GRAPHS), &built);
}

static void op_sync(void) {
    int slot;
    mtiart_stream h = stream_arg(&slot);
    switch (u8() % 8) {
    case 0:
    case 1: {
        mtiart_status st = chk(mtiart_stream_synchronize(h), "stream_synchronize");
        if (st == MTIART_ERROR_CAPTURE_UNSUPPORTED) {
            /* invalidates the capture; its end reports that */
        }
        return;
    }
    case 2: chk(mtiart_stream_query(h), "stream_query"); return;
    case 3: chk(mtiart_device_synchronize(0), "device_synchronize"); return;
    /* Timed waits: NOT_READY, or what the untimed call would return. */
    case 4:
        chk(mtiart_stream_synchronize_timeout(h, u8() % 2 ? 0 : u32() % 2000000), "sync timeout");
        return;
    case 5:
        chk(mtiart_device_synchronize_timeout(0, u32() % 2000000), "device sync timeout");
        return;
    case 6: {
        int ei = pick(FZ_EVENTS);
        chk(mtiart_event_synchronize_timeout(events[ei].live ? events[ei].h : stale_event,
                                             u32() % 2000000),
            "event sync timeout");
        return;
    }
    default: {
        int dev = (int)(int8_t)u8();
        mtiart_status st = chk(mtiart_device_synchronize(dev), "device_synchronize any");
        if (dev != 0 && st != MTIART_ERROR_INVALID_DEVICE) fail("sync of device %d", dev);
        return;
    }
    }
}

static void op_misc(void) {
    int slot;
    mtiart_stream h = stream_arg(&slot);
    switch (u8() % 8) {
    case 0: chk(mtiart_empty_cache(0), "empty_cache"); return;
    case 1: {
        mtiart_memory_stats st;
        expect(mtiart_memory_get_stats(0, &st), MTIART_SUCCESS, "stats");
        if (st.allocated_bytes > st.reserved_bytes) fail("allocated > reserved");
        if (st.reserved_bytes > st.capacity) fail("reserved > capacity");
        mtiart_memory_stat key = (mtiart_memory_stat)(u8() % 40);
        uint64_t value;
        expect(mtiart_memory_get_stat(0, key, &value),
               mtiart_memory_stat_name(key) ? MTIART_SUCCESS : MTIART_ERROR_INVALID_VALUE, "stat");
        uint64_t held;
        expect(mtiart_memory_get_stat(0, MTIART_STAT_GRAPH_HELD_BYTES, &held), MTIART_SUCCESS,
               "graph_held_bytes");
        if (held > st.active_bytes) fail("graph-held bytes beyond the active ones");
        return;
    }
    case 2: {
        size_t n = 0;
        expect(mtiart_memory_snapshot(0, NULL, 0, &n), MTIART_SUCCESS, "snapshot size");
        mtiart_block_info info[64];
        expect(mtiart_memory_snapshot(0, info, 64, &n), MTIART_SUCCESS, "snapshot");
        return;
    }
    case 3: {
        mtiart_pool_info pi;
        expect(mtiart_pool_get_info(0, pool_arg(), &pi), MTIART_SUCCESS, "pool_info");
        return;
    }
    case 4:
        chk(mtiart_launch_host_func(h, fz_host_fn, u8() % 8 == 0 ? (void *)host_buf : NULL),
            "host_func");
        return;
    case 5: {
        int pi = pick_ptr();
        if (slot >= 0 && streams[slot].live && ptrs[pi].live) use_on(pi, slot);
        else chk(mtiart_record_stream(ptrs[pi].p, h), "record_stream");
        return;
    }
    case 6: {
        mtiart_capture_status cs;
        chk(mtiart_stream_get_capture_info(h, &cs, NULL, NULL), "capture_info");
        return;
    }
    default: {
        /* A synchronous copy: an unsafe call while anything captures. */
        int pi = pick_ptr();
#ifdef FZ_TSAN
        return; /* see op_copy */
#endif
        if (!ptrs[pi].live || slot < 0 || !streams[slot].live || !use_on(pi, slot)) return;
        size_t bytes = ptrs[pi].size < FZ_HOST_BYTES ? ptrs[pi].size : FZ_HOST_BYTES;
        mtiart_status st =
            chk(mtiart_memcpy(h, sink_of(slot), ptrs[pi].p, bytes, MTIART_MEMCPY_DEVICE_TO_HOST),
                "memcpy sync");
        if (!any_capture() && st != MTIART_SUCCESS && st != MTIART_ERROR_KERNEL_FAILED)
            fail("memcpy: %s", mtiart_last_error_message());
        return;
    }
    }
}

/* ------------------------------------------------------------------ one input */

static void setup(void) {
    static bool once;
    if (!once) {
        once = true;
        setenv("MTIART_DEVICE_MEMORY", "256M", 0);
        expect(mtiart_init(), MTIART_SUCCESS, "init");
        expect(mtiart_pool_handle_create(&pool_handles[0]), MTIART_SUCCESS, "pool handle");
        expect(mtiart_pool_handle_create(&pool_handles[1]), MTIART_SUCCESS, "pool handle");
        mtiart_stream s;
        expect(mtiart_stream_create(0, 0, &s), MTIART_SUCCESS, "stream_create");
        expect(mtiart_stream_destroy(s), MTIART_SUCCESS, "stream_destroy");
        stale_stream = s;
        mtiart_event e;
        expect(mtiart_event_create(0, &e), MTIART_SUCCESS, "event_create");
        expect(mtiart_event_destroy(e), MTIART_SUCCESS, "event_destroy");
        stale_event = e;
    }
    memset(streams, 0, sizeof streams);
    memset(events, 0, sizeof events);
    memset(graphs, 0, sizeof graphs);
    memset(ptrs, 0, sizeof ptrs);
    memset(captures, 0, sizeof captures);
    for (int i = 0; i < FZ_STREAMS; i++) stream_capture[i] = -1;
    expect(mtiart_stream_get_default(0, &streams[0].h), MTIART_SUCCESS, "default stream");
    streams[0].live = true;
    streams[0].sink = next_sink++ % FZ_SINKS;
}

static void drain(mtiart_stream h) {
    /* Sticky errors are reported once each; a second synchronize must be clean. */
    mtiart_status st = chk(mtiart_stream_synchronize(h), "teardown sync");
    if (st != MTIART_SUCCESS && st != MTIART_ERROR_KERNEL_FAILED)
        fail("teardown synchronize: %s", mtiart_last_error_message());
    expect(mtiart_stream_synchronize(h), MTIART_SUCCESS, "teardown sync again");
}

static void teardown(void) {
    fz_step = -1;
    for (int c = 0; c < FZ_STREAMS; c++) {
        if (!captures[c].active) continue;
        mtiart_graph g;
        mtiart_status st = chk(mtiart_stream_end_capture(streams[c].h, &g), "teardown end_capture");
        if (st == MTIART_SUCCESS) expect(mtiart_graph_destroy(g), MTIART_SUCCESS, "graph_destroy");
        forget_capture(c);
    }
    for (int i = 0; i < FZ_GRAPHS; i++) {
        if (graphs[i].graph_live)
            expect(mtiart_graph_destroy(graphs[i].g), MTIART_SUCCESS, "graph_destroy");
        if (graphs[i].exec_live)
            expect(mtiart_graph_exec_destroy(graphs[i].x), MTIART_SUCCESS, "exec_destroy");
    }
    for (int i = 0; i < FZ_STREAMS; i++)
        if (streams[i].live) drain(streams[i].h);
    for (int i = 0; i < FZ_EVENTS; i++)
        if (events[i].live)
            expect(mtiart_event_destroy(events[i].h), MTIART_SUCCESS, "event_destroy");
    for (int i = 0; i < FZ_PTRS; i++)
        if (ptrs[i].live) expect(mtiart_free(ptrs[i].p), MTIART_SUCCESS, "teardown free");
    for (int i = 1; i < FZ_STREAMS; i++)
        if (streams[i].live)
            expect(mtiart_stream_destroy(streams[i].h), MTIART_SUCCESS, "stream_destroy");
    /* Destroyed streams still report their sticky errors here, one per call. */
    mtiart_status st_sync;
    int rounds = 0;
    while ((st_sync = chk(mtiart_device_synchronize(0), "teardown device sync")) != MTIART_SUCCESS)
        if (st_sync != MTIART_ERROR_KERNEL_FAILED || ++rounds > 64)
            fail("device_synchronize keeps failing: %s", mtiart_last_error_message());
    expect(mtiart_empty_cache(0), MTIART_SUCCESS, "teardown empty_cache");
    mtiart_memory_stats st;
    expect(mtiart_memory_get_stats(0, &st), MTIART_SUCCESS, "stats");
    if (st.allocated_bytes || st.requested_bytes || st.active_blocks || st.active_bytes ||
        st.reserved_bytes || st.segments || st.private_pools)
        fail("left behind: %llu allocated, %llu active blocks, %llu reserved, %llu segments, "
             "%llu private pools",
             (unsigned long long)st.allocated_bytes, (unsigned long long)st.active_blocks,
             (unsigned long long)st.reserved_bytes, (unsigned long long)st.segments,
             (unsigned long long)st.private_pools);
    mtiart_clear_last_error();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    in_data = data;
    in_size = size;
    in_pos = 0;
    setup();
    for (fz_step = 0; fz_step < FZ_MAX_OPS && more(); fz_step++) {
        switch (u8() % 13) {
        case 0: op_stream(); break;
        case 1:
        case 2: op_malloc(); break;
        case 3: op_free(); break;
        case 4:
        case 5: op_kernel(); break;
        case 6: op_copy(); break;
        case 7: op_event(); break;
        case 8: op_capture(); break;
        case 9: op_graph(); break;
        case 10: op_sync(); break;
        case 11: op_build(); break;
        default: op_misc(); break;
        }
    }
    fz_ops_done += (uint64_t)fz_step;
    teardown();
    return 0;
}

/* ------------------------------------------------------------------ standalone driver */

#ifndef MTIART_FUZZ_LIBFUZZER
static uint64_t rng_state;
static uint64_t rng(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int usage(void) {
    fprintf(stderr,
            "usage: fuzz_api [-seed N] [-runs N] [-max_total_time SECONDS] [-max_len BYTES]\n"
            "                [-save_dir DIR] [FILE...]\n"
            "  With FILEs: run each file as one input (reproduce a crash).\n"
            "  Otherwise: random inputs from a seeded PRNG until -runs or -max_total_time\n"
            "  (default 1000 runs); a failing input is written to DIR/crash-<seed>-<run>\n"
            "  before the abort (and its seed and run index are printed).\n");
    return 2;
}

static char crash_path[4096];

static void announce(void) {
    if (crash_path[0]) fprintf(stderr, "fuzz_api: input saved to %s\n", crash_path);
}

int main(int argc, char **argv) {
    uint64_t seed = (uint64_t)time(NULL), runs = 0;
    double max_time = 0;
    size_t max_len = 1024;
    const char *save_dir = ".";
    int first_file = argc;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "-runs") && i + 1 < argc) runs = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "-max_total_time") && i + 1 < argc) max_time = atof(argv[++i]);
        else if (!strcmp(argv[i], "-max_len") && i + 1 < argc)
            max_len = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "-save_dir") && i + 1 < argc) save_dir = argv[++i];
        else if (argv[i][0] == '-') return usage();
        else {
            first_file = i;
            break;
        }
    }
    if (first_file < argc) {
        for (int i = first_file; i < argc; i++) {
            FILE *f = fopen(argv[i], "rb");
            if (!f) {
                perror(argv[i]);
                return 2;
            }
            static uint8_t buf[1 << 20];
            size_t n = fread(buf, 1, sizeof buf, f);
            fclose(f);
            LLVMFuzzerTestOneInput(buf, n);
            printf("fuzz_api: %s ok\n", argv[i]);
        }
        return 0;
    }
    if (!runs && !max_time) runs = 1000;
    if (max_len < 1) max_len = 1;
    uint8_t *buf = malloc(max_len);
    if (!buf) return 2;
    atexit(announce);
    double start = now_s();
    uint64_t run = 0;
    rng_state = seed;
    printf("fuzz_api: seed %llu\n", (unsigned long long)seed);
    fflush(stdout);
    for (; (!runs || run < runs) && (!max_time || now_s() - start < max_time); run++) {
        size_t len = 1 + (size_t)(rng() % max_len);
        for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)rng();
        /* Save before running: an abort leaves the input behind. */
        snprintf(crash_path, sizeof crash_path, "%s/crash-%llu-%llu", save_dir,
                 (unsigned long long)seed, (unsigned long long)run);
        FILE *f = fopen(crash_path, "wb");
        if (f) {
            fwrite(buf, 1, len, f);
            fclose(f);
        } else {
            crash_path[0] = '\0';
        }
        LLVMFuzzerTestOneInput(buf, len);
        if (crash_path[0]) remove(crash_path);
        crash_path[0] = '\0';
    }
    printf("fuzz_api: %llu inputs, %llu operations (%llu kernels, %llu graphs, %llu replays) "
           "in %.1f s, no failure\n",
           (unsigned long long)run, (unsigned long long)fz_ops_done, (unsigned long long)fz_kernels,
           (unsigned long long)fz_graphs_made, (unsigned long long)fz_replays, now_s() - start);
    free(buf);
    return 0;
}
#endif
