/*
 * The caching device allocator, after PyTorch's CUDA caching allocator.
 *
 * Each device reserves one virtual address range (its "arena") at start-up, so "is this a
 * device pointer" is a range check and a chunk table maps any address to its segment.
 * Segments (multiples of 2 MiB) are committed from the arena on demand and carved into
 * blocks. Free blocks are cached per (pool, stream) in two-level segregated-fit bins:
 * small requests (<= 1 MiB) share 2 MiB segments and split freely; large ones get their
 * own segments and split only when the rest is large. A block freed on its stream is
 * reusable by later work on that stream at once (stream order makes that safe); a block
 * also used by other streams (record_stream) waits until their work is done.
 *
 * Private pools belong to graphs: captures allocate from them, and their memory is never
 * used for eager allocations, so a replay can write to it safely. A pool lives while
 * graphs use it or blocks are live in it.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#ifdef MTIART_HAVE_VALGRIND
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#endif

#define GRANULE (2ull << 20)
#define MIN_BLOCK 512ull
#define SMALL_REQUEST (1ull << 20)
#define LINEAR_BINS 32
#define SUB_BITS 4
#define NUM_BINS (LINEAR_BINS + 40 * (1 << SUB_BITS))
#define BITMAP_WORDS ((NUM_BINS + 63) / 64)

enum {
    BLK_ACTIVE = MTIART_BLOCK_ACTIVE,
    BLK_PENDING = MTIART_BLOCK_PENDING_FREE,
    BLK_FREE = MTIART_BLOCK_FREE,
    BLK_HELD = MTIART_BLOCK_GRAPH_HELD,           /* freed by the program, still held by graphs */
    BLK_RESERVED = MTIART_BLOCK_GRAPH_ALLOCATION, /* a memory node's, between launches */
    BLK_QUARANTINED = 5, /* valgrind only: free, waiting before reuse (free in snapshots) */
    BLK_CACHED = 6,      /* free, kept whole for its stream's next request of its size */
};

typedef struct segment segment;
typedef struct stream_heap stream_heap;

typedef struct stream_use {
    mt_stream *stream;
    uint64_t target; /* enqueued count of the stream when the block was freed */
} stream_use;

typedef struct block {
    uintptr_t addr_hidden; /* ~address: read with blk_addr() (see hide_addr) */
    size_t size;
    size_t requested;
    struct block *prev, *next;   /* address neighbours inside the segment */
    struct block *fprev, *fnext; /* bin list (free) or pending list */
    segment *seg;
    uint8_t state;
    uint16_t bin;
    uint64_t capture_id; /* pending until the end of this capture */
    stream_use *uses;
    uint32_t num_uses, cap_uses;
    uint32_t holds;         /* graphs, captures and executables holding it (see mt_graph_mem) */
    uint32_t mem_index;     /* its entry in the graph memory record that last recorded it... */
    uint64_t mem_serial;    /* ...which is the one with this serial number */
    mt_live *live;          /* its liveness, once a graph recorded it (a reference) */
    uint64_t alloc_capture; /* the capture that allocated it (0: none) */
    mt_graph_alloc *galloc; /* the memory node allocation it is, or NULL */
} block;

/* A memory node's allocation (see "memory nodes" below). */
struct mt_graph_alloc {
    int refs; /* nodes of graphs and executables; under the allocator's lock */
    mt_device *dev;
    block *b;
    mt_stream *stream; /* reserved on it: what mtiart_free of it orders against */
};

/* Valgrind only: a range a running op uses (complemented addresses, see hide_addr). */
typedef struct vg_range {
    uintptr_t lo, hi;
} vg_range;

/* Valgrind only: a freed block in the quarantine. */
typedef struct vg_quarantined {
    block *b;
    mt_stream *stream; /* its stream, with a reference, while it had work before the free */
    uint64_t target;   /* reusable once that stream has completed this much */
} vg_quarantined;

typedef struct heap {
    uint64_t bitmap[BITMAP_WORDS];
    block *bins[NUM_BINS];
} heap;

/* Blocks a stream's heap keeps whole after their free (see cache_put). */
#define CACHE_SLOTS 8

struct stream_heap {
    uint64_t stream_id;
    size_t num_segments; /* segments it owns; a heap without any is dropped on release */
    bool dead;           /* its stream is done for good: its free segments go to others */
    bool closed;         /* its stream was destroyed: it allocates no more, so nothing is cached */
    uint64_t seen;       /* the liveness census that last found its stream */
    uint32_t num_cached;
    block *cached[CACHE_SLOTS]; /* BLK_CACHED, oldest first */
    heap small, large;
    stream_heap *prev, *next;
};

struct segment {
    uintptr_t addr_hidden; /* ~address: read with seg_addr() */
    size_t size;
    mt_pool *pool;
    stream_heap *owner;
    bool small;
    size_t busy_blocks; /* blocks not FREE */
    uint64_t last_free; /* allocator free clock when a block of it was last freed */
    block *first;
    segment *prev, *next;
};

struct mt_pool {
    mtiart_pool_id id;
    int use_count;
    mt_device *dev;
    stream_heap *heaps, *last_heap;
    /* heaps by stream id (open addressing, linear probing, no tombstones): every stream
     * that ever allocated has a heap, so a list walk per lookup grew without bound */
    stream_heap **heap_slots;
    size_t heap_cap, heap_count;
    segment *segments;
    uint64_t reserved, allocated, active_blocks;
    mt_pool *next;
};

/* Read through mtiart_memory_get_stat. */
typedef struct stats_more {
    uint64_t graph_held_bytes; /* blocks the program freed that graphs still hold */
    uint64_t graph_held_bytes_peak;
    uint64_t graph_held_blocks;
    uint64_t graph_alloc_bytes; /* memory nodes' allocations, live or not */
    uint64_t graph_alloc_bytes_peak;
} stats_more;

typedef struct observer {
    mtiart_oom_observer fn;
    void *user_data;
} observer;

typedef struct mt_allocator {
    mt_spinlock lock;
    uintptr_t base_hidden; /* ~arena start: read with arena_base() */
    size_t arena_size;
    size_t num_chunks;
    _Atomic(segment *) *chunk_segment;
    uint64_t *chunk_used; /* bitmap over chunks */
    mt_pool default_pool;
    mt_pool *pools; /* private pools */
    block **table;  /* addr -> active/pending block, open addressing */
    size_t table_cap, table_count, table_tombs;
    block *spare_blocks;
    block *pending;
    block *held;         /* BLK_HELD blocks (through fprev/fnext, as the pending list) */
    uint64_t free_clock; /* counts frees: orders them against waits for the device */
    mtiart_memory_stats stats;
    stats_more more;      /* statistics the public struct has no room for */
    vg_range *vg_running; /* valgrind only: the buffers of running ops */
    size_t num_vg_running, cap_vg_running;
    vg_quarantined *quarantine; /* valgrind only: a ring, oldest at quarantine_head */
    size_t quarantine_head, quarantine_count, quarantine_cap;
    uint64_t quarantine_bytes, quarantine_limit;
    unsigned streams_freed_seen; /* the device's streams_freed at the last census */
    uint64_t census;             /* number of the last census of live streams */
} mt_allocator;

#define TOMBSTONE ((block *)(uintptr_t)1)

static atomic_uint_least64_t next_graph_pool = 1;
static atomic_uint_least64_t next_pool_handle = 1;
static pthread_mutex_t observers_lock = PTHREAD_MUTEX_INITIALIZER;
static observer *observers;
static size_t num_observers;

/* ------------------------------------------------------------------ valgrind */

/*
 * Device addresses kept in the allocator's own bookkeeping (host heap) are stored
 * complemented. Valgrind's leak checker scans host memory for pointers: without this the
 * bookkeeping would keep every device block "still reachable", and a block the program
 * lost could never show as "definitely lost".
 */
static inline uintptr_t hide_addr(uintptr_t addr) { return ~addr; }
static inline uintptr_t blk_addr(const block *b) { return ~b->addr_hidden; }
static inline uintptr_t seg_addr(const segment *seg) { return ~seg->addr_hidden; }
static inline uintptr_t arena_base(const mt_allocator *a) { return ~a->base_hidden; }

/*
 * Memcheck's view of device memory (client requests: compiled out without the headers,
 * a few no-op instructions when not running under valgrind):
 *   - a block handed out is a MALLOCLIKE block of its requested size, allocated at the
 *     caller of mtiart_malloc*: a block never freed is "definitely lost" with that stack;
 *   - the program's free makes the block FREELIKE (free stack: the caller's) and NOACCESS
 *     at once, whatever its streams still have queued, so the host's next access to it is
 *     reported; cached memory and released segments are NOACCESS too (under valgrind a
 *     released segment stays mapped, so a stray access is reported rather than a crash);
 *   - work that runs after the free (kernels enqueued before it, replays into memory that
 *     graphs hold, memory nodes' allocations between launches) touches only the buffers
 *     it describes: while an op runs, the parts of its buffers that are no live allocation
 *     are addressable and defined (mt_alloc_vg_enter / mt_alloc_vg_leave), and a free made
 *     meanwhile spares what running ops use;
 *   - a freed block waits in a quarantine before it is reused (as ASan's allocator does:
 *     MTIART_VALGRIND_QUARANTINE bytes, oldest out first, never before the work enqueued
 *     before its free is done), so an access after the free stays an invalid access instead
 *     of landing in the next allocation. Flushed when memory runs out and by empty_cache.
 */
#ifdef MTIART_HAVE_VALGRIND
#define VG_ON() RUNNING_ON_VALGRIND
#define VG_ALLOC(b, defined)                                                                       \
    VALGRIND_MALLOCLIKE_BLOCK((void *)blk_addr(b), (b)->requested ? (b)->requested : 1, 0,         \
                              (defined))
#define VG_FREE(b) VALGRIND_FREELIKE_BLOCK((void *)blk_addr(b), 0)
#define VG_NOACCESS(p, n) VALGRIND_MAKE_MEM_NOACCESS((void *)(p), (n))
#define VG_DEFINED(p, n) VALGRIND_MAKE_MEM_DEFINED((void *)(p), (n))
#else
#define VG_ON() 0
#define VG_ALLOC(b, defined) ((void)(b), (void)(defined))
#define VG_FREE(b) ((void)(b))
#define VG_NOACCESS(p, n) ((void)(p), (void)(n))
#define VG_DEFINED(p, n) ((void)(p), (void)(n))
#endif

/* [lo, hi) except what running ops use becomes NOACCESS; the rest stays as it is. */
static void vg_noaccess(const mt_allocator *a, uintptr_t lo, uintptr_t hi) {
    for (size_t i = 0; i < a->num_vg_running && lo < hi; i++) {
        uintptr_t rlo = ~a->vg_running[i].lo, rhi = ~a->vg_running[i].hi;
        if (rhi <= lo || rlo >= hi) continue;
        if (rlo > lo) vg_noaccess(a, lo, rlo);
        lo = rhi; /* what follows the running range is checked against the others */
    }
    if (lo < hi) VG_NOACCESS(lo, hi - lo);
}

/* The program freed block b: memcheck sees the free at once, with the caller's stack, and
 * reports any access the host makes from now on. Lock held. */
static void vg_block_freed(const mt_allocator *a, block *b) {
    if (!VG_ON()) return;
    VG_FREE(b);
    uintptr_t lo = blk_addr(b), hi = lo + b->size;
    for (size_t i = 0; i < a->num_vg_running; i++) { /* a running op still uses it */
        uintptr_t x = ~a->vg_running[i].lo, y = ~a->vg_running[i].hi;
        if (x < lo) x = lo;
        if (y > hi) y = hi;
        if (x < y) VG_DEFINED(x, y - x);
    }
    vg_noaccess(a, lo, hi);
}

/* Whether [lo, hi) overlaps what a running op uses. */
static bool vg_running_overlaps(const mt_allocator *a, uintptr_t lo, uintptr_t hi) {
    for (size_t i = 0; i < a->num_vg_running; i++)
        if (~a->vg_running[i].hi > lo && ~a->vg_running[i].lo < hi) return true;
    return false;
}

/* ------------------------------------------------------------------ helpers */

static inline size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

static void update_peak(uint64_t *peak, uint64_t value) {
    if (value > *peak) *peak = value;
}

static block *block_new(mt_allocator *a) {
    block *b = a->spare_blocks;
    if (b) {
        a->spare_blocks = b->fnext;
    } else {
        b = malloc(sizeof *b);
        if (!b) return NULL;
    }
    memset(b, 0, sizeof *b);
    return b;
}

static void block_delete(mt_allocator *a, block *b) {
    free(b->uses);
    b->uses = NULL;
    b->fnext = a->spare_blocks;
    a->spare_blocks = b;
}

/* Bin of a size: exact below LINEAR_BINS granules, then 16 bins per power of two. */
static unsigned bin_of(size_t size) {
    size_t units = size / MIN_BLOCK;
    if (units < LINEAR_BINS) return (unsigned)units;
    unsigned fl = 63u - (unsigned)__builtin_clzll(units);
    unsigned sl = (unsigned)(units >> (fl - SUB_BITS)) & ((1u << SUB_BITS) - 1);
    unsigned bin = LINEAR_BINS + (fl - 5) * (1u << SUB_BITS) + sl;
    return bin < NUM_BINS ? bin : NUM_BINS - 1;
}

static void heap_insert(heap *h, block *b) {
    unsigned bin = bin_of(b->size);
    b->bin = (uint16_t)bin;
    b->fprev = NULL;
    b->fnext = h->bins[bin];
    if (b->fnext) b->fnext->fprev = b;
    h->bins[bin] = b;
    h->bitmap[bin / 64] |= 1ull << (bin % 64);
}

static void heap_remove(heap *h, block *b) {
    if (b->fprev) b->fprev->fnext = b->fnext;
    else h->bins[b->bin] = b->fnext;
    if (b->fnext) b->fnext->fprev = b->fprev;
    if (!h->bins[b->bin]) h->bitmap[b->bin / 64] &= ~(1ull << (b->bin % 64));
    b->fprev = b->fnext = NULL;
}

/* Best block of at least `size` bytes: first fit in the size's own bin, then the first
 * block of the next non-empty bin (every block there is large enough). */
static block *heap_find(heap *h, size_t size) {
    unsigned bin = bin_of(size);
    block *best = NULL;
    for (block *b = h->bins[bin]; b; b = b->fnext)
        if (b->size >= size && (!best || b->size < best->size)) best = b;
    if (best) return best;
    for (unsigned next = bin + 1; next < NUM_BINS;) {
        uint64_t word = h->bitmap[next / 64] >> (next % 64);
        if (word) {
            unsigned found = next + (unsigned)__builtin_ctzll(word);
            return h->bins[found];
        }
        next = (next / 64 + 1) * 64;
    }
    return NULL;
}

/* ------------------------------------------------------------------ address table */

static inline size_t hash_addr(uintptr_t addr, size_t cap) {
    return (size_t)(((uint64_t)addr >> 9) * 0x9E3779B97F4A7C15ull >> 20) & (cap - 1);
}

static bool table_grow(mt_allocator *a) {
    size_t cap = a->table_cap ? a->table_cap * 2 : 1024;
    if (a->table_count * 4 < a->table_cap) cap = a->table_cap; /* only tombstones: rehash */
    block **table = calloc(cap, sizeof *table);
    if (!table) return false;
    for (size_t i = 0; i < a->table_cap; i++) {
        block *b = a->table[i];
        if (!b || b == TOMBSTONE) continue;
        size_t j = hash_addr(blk_addr(b), cap);
        while (table[j]) j = (j + 1) & (cap - 1);
        table[j] = b;
    }
    free(a->table);
    a->table = table;
    a->table_cap = cap;
    a->table_tombs = 0;
    return true;
}

static bool table_insert(mt_allocator *a, block *b) {
    if ((a->table_count + a->table_tombs + 1) * 2 > a->table_cap && !table_grow(a)) return false;
    size_t j = hash_addr(blk_addr(b), a->table_cap);
    while (a->table[j] && a->table[j] != TOMBSTONE) j = (j + 1) & (a->table_cap - 1);
    if (a->table[j] == TOMBSTONE) a->table_tombs--;
    a->table[j] = b;
    a->table_count++;
    return true;
}

static block **table_slot(mt_allocator *a, uintptr_t addr) {
    if (!a->table_cap) return NULL;
    size_t j = hash_addr(addr, a->table_cap);
    for (block *b; (b = a->table[j]) != NULL; j = (j + 1) & (a->table_cap - 1))
        if (b != TOMBSTONE && blk_addr(b) == addr) return &a->table[j];
    return NULL;
}

static void table_erase(mt_allocator *a, block **slot) {
    *slot = TOMBSTONE;
    a->table_count--;
    a->table_tombs++;
}

/* ------------------------------------------------------------------ pools and heaps */

static inline size_t heap_hash(uint64_t stream_id, size_t cap) {
    return (size_t)((stream_id * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

static stream_heap *heap_index_find(const mt_pool *pool, uint64_t stream_id) {
    if (!pool->heap_cap) return NULL;
    for (size_t j = heap_hash(stream_id, pool->heap_cap);; j = (j + 1) & (pool->heap_cap - 1)) {
        stream_heap *h = pool->heap_slots[j];
        if (!h || h->stream_id == stream_id) return h;
    }
}

static bool heap_index_insert(mt_pool *pool, stream_heap *h) {
    if ((pool->heap_count + 1) * 2 > pool->heap_cap) {
        size_t cap = pool->heap_cap ? pool->heap_cap * 2 : 16;
        stream_heap **slots = calloc(cap, sizeof *slots);
        if (!slots) return false;
        for (size_t i = 0; i < pool->heap_cap; i++) {
            stream_heap *o = pool->heap_slots[i];
            if (!o) continue;
            size_t j = heap_hash(o->stream_id, cap);
            while (slots[j]) j = (j + 1) & (cap - 1);
            slots[j] = o;
        }
        free(pool->heap_slots);
        pool->heap_slots = slots;
        pool->heap_cap = cap;
    }
    size_t j = heap_hash(h->stream_id, pool->heap_cap);
    while (pool->heap_slots[j]) j = (j + 1) & (pool->heap_cap - 1);
    pool->heap_slots[j] = h;
    pool->heap_count++;
    return true;
}

/* Backward-shift deletion: later entries of the probe chain move into the hole. */
static void heap_index_erase(mt_pool *pool, const stream_heap *h) {
    size_t mask = pool->heap_cap - 1;
    size_t hole = heap_hash(h->stream_id, pool->heap_cap);
    while (pool->heap_slots[hole] != h) hole = (hole + 1) & mask;
    pool->heap_slots[hole] = NULL;
    for (size_t k = (hole + 1) & mask; pool->heap_slots[k]; k = (k + 1) & mask) {
        size_t home = heap_hash(pool->heap_slots[k]->stream_id, pool->heap_cap);
        if (((k - home) & mask) >= ((k - hole) & mask)) {
            pool->heap_slots[hole] = pool->heap_slots[k];
            pool->heap_slots[k] = NULL;
            hole = k;
        }
    }
    pool->heap_count--;
}

static stream_heap *heap_find_or_new(mt_pool *pool, uint64_t stream_id) {
    stream_heap *h = heap_index_find(pool, stream_id);
    if (!h) {
        h = calloc(1, sizeof *h);
        if (!h) return NULL;
        h->stream_id = stream_id;
        if (!heap_index_insert(pool, h)) {
            free(h);
            return NULL;
        }
        h->next = pool->heaps;
        if (pool->heaps) pool->heaps->prev = h;
        pool->heaps = h;
    }
    pool->last_heap = h;
    return h;
}

/* The heap of `stream_id` in `pool`, made if new; NULL out of host memory. Lock held. */
static inline stream_heap *heap_for(mt_pool *pool, uint64_t stream_id) {
    stream_heap *h = pool->last_heap;
    return h && h->stream_id == stream_id ? h : heap_find_or_new(pool, stream_id);
}

static void heap_drop(mt_pool *pool, stream_heap *h) {
    if (h->prev) h->prev->next = h->next;
    else pool->heaps = h->next;
    if (h->next) h->next->prev = h->prev;
    heap_index_erase(pool, h);
    if (pool->last_heap == h) pool->last_heap = NULL;
    free(h);
}

/* Drop the heaps that own no segment (streams that are gone, or whose memory was all
 * released): without this every stream that ever allocated kept ~11 KB for good. A live
 * stream simply gets a fresh heap on its next allocation. Lock held. */
static void drop_empty_heaps(mt_pool *pool) {
    for (stream_heap *h = pool->heaps, *next; h; h = next) {
        next = h->next;
        if (!h->num_segments) heap_drop(pool, h);
    }
}

static mt_pool *find_pool(mt_allocator *a, mtiart_pool_id id) {
    if (id.first == 0 && id.second == 0) return &a->default_pool;
    for (mt_pool *p = a->pools; p; p = p->next)
        if (p->id.first == id.first && p->id.second == id.second) return p;
    return NULL;
}

static void pool_maybe_delete(mt_allocator *a, mt_pool *pool) {
    if (pool == &a->default_pool || pool->use_count > 0 || pool->segments) return;
    for (mt_pool **link = &a->pools; *link; link = &(*link)->next) {
        if (*link == pool) {
            *link = pool->next;
            break;
        }
    }
    for (stream_heap *h = pool->heaps, *next; h; h = next) {
        next = h->next;
        free(h);
    }
    free(pool->heap_slots);
    a->stats.private_pools--;
    free(pool);
}

/* ------------------------------------------------------------------ segments */

static bool chunk_range_find(mt_allocator *a, size_t chunks, size_t *first) {
    size_t run = 0;
    for (size_t i = 0; i < a->num_chunks; i++) {
        if (a->chunk_used[i / 64] & (1ull << (i % 64))) {
            run = 0;
            continue;
        }
        if (++run == chunks) {
            *first = i + 1 - chunks;
            return true;
        }
    }
    return false;
}

static void chunk_range_mark(mt_allocator *a, size_t first, size_t chunks, segment *seg) {
    for (size_t i = first; i < first + chunks; i++) {
        if (seg) a->chunk_used[i / 64] |= 1ull << (i % 64);
        else a->chunk_used[i / 64] &= ~(1ull << (i % 64));
        atomic_store_explicit(&a->chunk_segment[i], seg, memory_order_release);
    }
}

static segment *segment_new(mt_allocator *a, mt_device *dev, mt_pool *pool, stream_heap *owner,
                            size_t size, bool small) {
    if (a->stats.reserved_bytes + size > dev->capacity) return NULL;
    size_t chunks = size / GRANULE, first;
    if (!chunk_range_find(a, chunks, &first)) return NULL;
    segment *seg = calloc(1, sizeof *seg);
    block *b = block_new(a);
    if (!seg || !b) {
        free(seg);
        if (b) block_delete(a, b);
        return NULL;
    }
    uintptr_t addr = arena_base(a) + first * GRANULE;
    if (mprotect((void *)addr, size, PROT_READ | PROT_WRITE) != 0) {
        free(seg);
        block_delete(a, b);
        return NULL;
    }
    VG_NOACCESS(addr, size);
    seg->addr_hidden = hide_addr(addr);
    seg->size = size;
    seg->pool = pool;
    seg->owner = owner;
    seg->small = small;
    seg->first = b;
    seg->next = pool->segments;
    if (pool->segments) pool->segments->prev = seg;
    pool->segments = seg;
    chunk_range_mark(a, first, chunks, seg);
    b->addr_hidden = hide_addr(addr);
    b->size = size;
    b->seg = seg;
    b->state = BLK_FREE;
    heap_insert(small ? &owner->small : &owner->large, b);
    owner->num_segments++;
    pool->reserved += size;
    a->stats.reserved_bytes += size;
    update_peak(&a->stats.reserved_bytes_peak, a->stats.reserved_bytes);
    a->stats.segments++;
    update_peak(&a->stats.segments_peak, a->stats.segments);
    a->stats.segment_allocs++;
    return seg;
}

static void segment_release(mt_allocator *a, segment *seg) {
    block *b = seg->first; /* the whole segment, free */
    heap_remove(seg->small ? &seg->owner->small : &seg->owner->large, b);
    block_delete(a, b);
    seg->owner->num_segments--;
    mt_pool *pool = seg->pool;
    if (seg->prev) seg->prev->next = seg->next;
    else pool->segments = seg->next;
    if (seg->next) seg->next->prev = seg->prev;
    pool->reserved -= seg->size;
    a->stats.reserved_bytes -= seg->size;
    a->stats.segments--;
    a->stats.segment_frees++;
    uintptr_t addr = seg_addr(seg);
    chunk_range_mark(a, (addr - arena_base(a)) / GRANULE, seg->size / GRANULE, NULL);
    /* Give the pages back and make stray accesses fault, as freed device memory would.
     * Under valgrind the range stays mapped but NOACCESS: memcheck reports the access
     * (with the block's free stack) and the program goes on. */
    madvise((void *)addr, seg->size, MADV_DONTNEED);
    if (VG_ON()) VG_NOACCESS(addr, seg->size);
    else mprotect((void *)addr, seg->size, PROT_NONE);
    free(seg);
}

/* A stream of the device by id, with a reference; NULL once it is gone (its work is then
 * done). Not on hot paths: walks the device's stream list. */
static mt_stream *stream_ref_by_id(mt_device *dev, uint64_t id) {
    mt_stream *found = NULL;
    pthread_mutex_lock(&dev->streams_lock);
    for (mt_stream *s = dev->streams; s; s = s->dev_next) {
        if (s->id != id) continue;
        if (mt_stream_try_ref(s)) found = s; /* else being freed, so it is drained */
        break;
    }
    pthread_mutex_unlock(&dev->streams_lock);
    return found;
}

/* Whether memory can be unmapped now: every stream of the device has done all the work
 * enqueued on it. A block is free for reuse at once after a stream-ordered free, but work
 * enqueued earlier, on its stream or on any other (a graph output used eagerly elsewhere,
 * a forgotten record_stream), may still touch it; unmapping is safe only when nothing is
 * in flight, which is what cudaFree's implicit synchronization guarantees. Segments are
 * kept cached otherwise, for empty_cache and the out-of-memory retry (see settle_frees). */
static bool device_quiet(mt_device *dev) {
    bool quiet = true;
    pthread_mutex_lock(&dev->streams_lock);
    for (mt_stream *s = dev->streams; s && quiet; s = s->dev_next)
        quiet = atomic_load(&s->completed) >= atomic_load(&s->enqueued);
    pthread_mutex_unlock(&dev->streams_lock);
    return quiet;
}

/* Wait for every stream of the device that has work in flight (not from a worker, where
 * it would deadlock). Sticky errors stay for the streams' own synchronizations. */
static void wait_device_streams(mt_device *dev) {
    if (mt_on_worker()) return;
    for (;;) {
        size_t count = 0;
        mt_stream *busy[64];
        pthread_mutex_lock(&dev->streams_lock);
        for (mt_stream *s = dev->streams; s && count < 64; s = s->dev_next) {
            if (atomic_load(&s->completed) >= atomic_load(&s->enqueued)) continue;
            if (mt_stream_try_ref(s)) busy[count++] = s;
        }
        pthread_mutex_unlock(&dev->streams_lock);
        for (size_t i = 0; i < count; i++) {
            mt_stream_wait_idle(busy[i], false, false, MT_FOREVER);
            mt_stream_unref(busy[i]);
        }
        if (count < 64) return;
    }
}

/* Release the fully free segments, last freed at or before `horizon` (see settle_frees),
 * of pools that no graph uses and of the default pool. */
static size_t release_cached(mt_allocator *a, uint64_t horizon) {
    size_t released = 0;
    mt_pool *pool = &a->default_pool;
    mt_pool *next_private = a->pools;
    while (pool) {
        mt_pool *following = (pool == &a->default_pool) ? next_private : pool->next;
        if (pool == &a->default_pool || pool->use_count == 0) {
            for (segment *seg = pool->segments, *next; seg; seg = next) {
                next = seg->next;
                if (seg->busy_blocks == 0 && seg->last_free <= horizon) {
                    released += seg->size;
                    segment_release(a, seg);
                }
            }
            drop_empty_heaps(pool);
            pool_maybe_delete(a, pool);
        }
        pool = following;
    }
    return released;
}

/* Mark the heaps of streams that are done for good (dead): destroyed, with all their work
 * done (a destroyed stream gets no new work, and is freed once its work is done). Their
 * cached memory is safe for any stream then. Taken again only when a stream was freed
 * since the last census, or destroyed streams are still about. Lock held. */
static void census_streams(mt_allocator *a, mt_device *dev) {
    unsigned destroyed = atomic_load(&dev->streams_destroyed);
    unsigned freed = atomic_load(&dev->streams_freed);
    if (freed == a->streams_freed_seen && destroyed == freed) return;
    a->streams_freed_seen = freed;
    uint64_t census = ++a->census;
    pthread_mutex_lock(&dev->streams_lock);
    for (mt_stream *s = dev->streams; s; s = s->dev_next) {
        if (atomic_load(&s->destroyed) && atomic_load(&s->completed) >= atomic_load(&s->enqueued))
            continue;
        for (mt_pool *pool = &a->default_pool; pool;
             pool = pool == &a->default_pool ? a->pools : pool->next) {
            stream_heap *h = heap_index_find(pool, s->id);
            if (h) h->seen = census;
        }
    }
    pthread_mutex_unlock(&dev->streams_lock);
    for (mt_pool *pool = &a->default_pool; pool;
         pool = pool == &a->default_pool ? a->pools : pool->next)
        for (stream_heap *h = pool->heaps; h; h = h->next) h->dead = h->seen != census;
}

/* Give `sh` a wholly free segment of a gone stream's that fits a request of `size` bytes
 * (small or large): the memory of short-lived streams is reused instead of piling up until
 * an out-of-memory retry. Lock held. */
static bool adopt_segment(mt_allocator *a, mt_pool *pool, stream_heap *sh, size_t size) {
    census_streams(a, pool->dev);
    bool small = size <= SMALL_REQUEST;
    for (segment *seg = pool->segments; seg; seg = seg->next) {
        stream_heap *from = seg->owner;
        if (!from->dead || from == sh || seg->busy_blocks || seg->small != small ||
            seg->size < size)
            continue;
        block *b = seg->first; /* the whole segment */
        heap_remove(small ? &from->small : &from->large, b);
        heap_insert(small ? &sh->small : &sh->large, b);
        seg->owner = sh;
        sh->num_segments++;
        if (--from->num_segments == 0) heap_drop(pool, from);
        return true;
    }
    return false;
}

/* ------------------------------------------------------------------ blocks */

static void live_kill(block *b);

/* Block b goes back to its heap, reusable. Lock held. */
static void release_now(mt_allocator *a, block *b) {
    live_kill(b); /* a memory node's allocation recorded by graphs, never the program's */
    segment *seg = b->seg;
    heap *h = seg->small ? &seg->owner->small : &seg->owner->large;
    b->state = BLK_FREE;
    b->requested = 0;
    b->capture_id = 0;
    seg->busy_blocks--;
    seg->last_free = ++a->free_clock;
    /* Coalesce with free neighbours. */
    if (b->prev && b->prev->state == BLK_FREE) {
        block *p = b->prev;
        heap_remove(h, p);
        p->size += b->size;
        p->next = b->next;
        if (b->next) b->next->prev = p;
        block_delete(a, b);
        b = p;
    }
    if (b->next && b->next->state == BLK_FREE) {
        block *n = b->next;
        heap_remove(h, n);
        b->size += n->size;
        b->next = n->next;
        if (n->next) n->next->prev = b;
        block_delete(a, n);
    }
    heap_insert(h, b);
    mt_pool *pool = seg->pool;
    if (pool != &a->default_pool && pool->use_count == 0 && seg->busy_blocks == 0 &&
        device_quiet(pool->dev)) {
        /* No graph can replay into this pool any more: return its memory right away. */
        segment_release(a, seg);
        pool_maybe_delete(a, pool);
    }
}

static bool vg_quarantine(mt_allocator *a, block *b);

/* Block b is free (no stream's earlier work and no graph needs it): reusable now, or once
 * it is out of the quarantine under valgrind. Lock held. */
static void release_block(mt_allocator *a, block *b) {
    if (VG_ON() && vg_quarantine(a, b)) return;
    release_now(a, b);
}

/* ------------------------------------------------------------------ stream caches */

/*
 * The fast path of a stream's allocate-free cycle. A block the program frees with nothing
 * left to wait for (no other stream uses it, no graph holds it) is reusable by its own
 * stream at once. Up to CACHE_SLOTS such blocks of a stream stay whole in its heap's cache
 * (BLK_CACHED, still in the address table) rather than merged back into the heap, and the
 * stream's next request of the same rounded size takes the latest one back: no search,
 * split, merge or table update on either side of the cycle.
 *
 * A cached block is free memory: its free took it out of the allocated, requested and
 * active figures (of the device and of its pool), as any free does. It stays reserved and
 * keeps its segment busy, so the segment is neither released nor adopted under it;
 * snapshots show it free, and the inactive-split figures count it as if it were merged.
 * Caches are emptied into their heaps when their stream's heap has no block for a request,
 * by empty_cache and the out-of-memory retry (settle_frees), and when their stream is
 * destroyed (a destroyed stream's frees keep nothing: their blocks go to other streams once
 * its work is done, see census_streams). Private pools (their reuse follows the graphs'
 * rules) and valgrind (whose quarantine and memcheck's view want every free to go through
 * the ordinary path) bypass them.
 */

/* Cached block b goes back to its heap. Lock held. */
static void cache_release(mt_allocator *a, block *b) {
    table_erase(a, table_slot(a, blk_addr(b)));
    release_block(a, b);
}

/* Empty heap h's cache into the heap. Lock held. */
static void cache_drain(mt_allocator *a, stream_heap *h) {
    for (uint32_t i = 0; i < h->num_cached; i++) cache_release(a, h->cached[i]);
    h->num_cached = 0;
}

static void drain_caches(mt_allocator *a) {
    for (stream_heap *h = a->default_pool.heaps; h; h = h->next)
        if (h->num_cached) cache_drain(a, h);
}

/* Keep block b, which nothing uses any more, whole for its stream; false where it must go
 * back to the heap. Out of the active figures already. Lock held. */
static bool cache_put(mt_allocator *a, block *b) {
    segment *seg = b->seg;
    stream_heap *h = seg->owner;
    if (VG_ON() || seg->pool != &a->default_pool || !seg->small || h->closed || h->dead)
        return false;
    if (h->num_cached == CACHE_SLOTS) {
        cache_release(a, h->cached[0]);
        memmove(h->cached, h->cached + 1, (CACHE_SLOTS - 1) * sizeof *h->cached);
        h->num_cached--;
    }
    b->state = BLK_CACHED; /* its segment's free clock moves when it leaves the cache */
    h->cached[h->num_cached++] = b;
    return true;
}

/* The latest cached block of heap h of exactly `size` bytes, out of the cache. Lock held. */
static block *cache_take(stream_heap *h, size_t size) {
    for (uint32_t i = h->num_cached; i-- > 0;) {
        block *b = h->cached[i];
        if (b->size != size) continue;
        for (uint32_t j = i + 1; j < h->num_cached; j++) h->cached[j - 1] = h->cached[j];
        h->num_cached--;
        return b;
    }
    return NULL;
}

static void drop_uses(block *b) {
    for (uint32_t i = 0; i < b->num_uses; i++) mt_stream_unref(b->uses[i].stream);
    b->num_uses = 0;
}

static void pending_remove(mt_allocator *a, block *b) {
    if (b->fprev) b->fprev->fnext = b->fnext;
    else a->pending = b->fnext;
    if (b->fnext) b->fnext->fprev = b->fprev;
    b->fprev = b->fnext = NULL;
}

static void finish_pending(mt_allocator *a, block *b) {
    pending_remove(a, b);
    block **slot = table_slot(a, blk_addr(b));
    if (slot) table_erase(a, slot);
    drop_uses(b);
    a->stats.active_blocks--;
    a->stats.active_bytes -= b->size;
    b->seg->pool->active_blocks--;
    release_block(a, b); /* memcheck was told of the free at mtiart_free */
}

static void process_pending(mt_allocator *a) {
    for (block *b = a->pending, *next; b; b = next) {
        next = b->fnext;
        if (b->capture_id) continue;
        bool done = true;
        for (uint32_t i = 0; i < b->num_uses && done; i++)
            done = atomic_load(&b->uses[i].stream->completed) >= b->uses[i].target;
        if (done) finish_pending(a, b);
    }
}

static void vg_quarantine_drain(mt_allocator *a, bool all);

/* Wait until work that could still touch memory freed so far is done (what cudaFree's
 * synchronization gives): read the free clock, then wait for every stream busy at that
 * point. Any such work was enqueued before its block's free, so segments last freed at or
 * before the returned clock value can be unmapped. From a worker, which cannot wait, that
 * holds only if the device is already quiet. Allocator lock not held. */
static uint64_t settle_frees(mt_device *dev) {
    mt_allocator *a = dev->alloc;
    mt_spin_lock(&a->lock);
    if (a->pending) process_pending(a);        /* frees that are due count before the clock */
    if (VG_ON()) vg_quarantine_drain(a, true); /* memory is wanted back: no quarantine */
    drain_caches(a);
    uint64_t horizon = a->free_clock;
    mt_spin_unlock(&a->lock);
    if (mt_on_worker()) return device_quiet(dev) ? horizon : 0;
    wait_device_streams(dev);
    return horizon;
}

/* Valgrind only: quarantine freed block b rather than reuse it now; false without a
 * quarantine, and for private pools: their reuse by later captures is the pool's contract
 * (the host's accesses to their freed blocks are reported all the same). Lock held. */
static bool vg_quarantine(mt_allocator *a, block *b) {
    mt_pool *pool = b->seg->pool;
    if (!a->quarantine_limit || pool != &a->default_pool) return false;
    if (a->quarantine_count == a->quarantine_cap) {
        size_t cap = a->quarantine_cap ? a->quarantine_cap * 2 : 64;
        vg_quarantined *ring = malloc(cap * sizeof *ring);
        if (!ring) return false;
        for (size_t i = 0; i < a->quarantine_count; i++)
            ring[i] = a->quarantine[(a->quarantine_head + i) % a->quarantine_cap];
        free(a->quarantine);
        a->quarantine = ring;
        a->quarantine_cap = cap;
        a->quarantine_head = 0;
    }
    /* Stream-ordered reuse, as without valgrind, would come right after the work the block's
     * stream had enqueued before the free; out of the quarantine, not before that. */
    mt_stream *owner = stream_ref_by_id(pool->dev, b->seg->owner->stream_id);
    uint64_t target = owner ? atomic_load(&owner->enqueued) : 0;
    if (owner && atomic_load(&owner->completed) >= target) {
        mt_stream_unref(owner);
        owner = NULL;
    }
    b->state = BLK_QUARANTINED;
    a->quarantine[(a->quarantine_head + a->quarantine_count++) % a->quarantine_cap] =
        (vg_quarantined){b, owner, target};
    a->quarantine_bytes += b->size;
    return true;
}

/* Take the oldest blocks out of the quarantine while it holds more than its limit (all of
 * them with `all`). Lock held. */
static void vg_quarantine_drain(mt_allocator *a, bool all) {
    size_t kept = 0, n = a->quarantine_count;
    for (size_t i = 0; i < n; i++) {
        vg_quarantined q = a->quarantine[(a->quarantine_head + i) % a->quarantine_cap];
        bool out = all || (a->quarantine_bytes > a->quarantine_limit &&
                           (!q.stream || atomic_load(&q.stream->completed) >= q.target));
        if (!out) {
            a->quarantine[(a->quarantine_head + kept++) % a->quarantine_cap] = q;
            continue;
        }
        a->quarantine_bytes -= q.b->size;
        if (q.stream) mt_stream_unref(q.stream);
        release_now(a, q.b);
    }
    a->quarantine_count = kept;
}

/* Valgrind only: settle what the frees made due (pending frees, the quarantine). Lock held. */
static void vg_settle(mt_allocator *a) {
    if (a->pending) process_pending(a);
    if (a->quarantine_bytes > a->quarantine_limit) vg_quarantine_drain(a, false);
}

/* Valgrind only: settle the frees whose streams are done (called after host waits, and at
 * exit). */
void mt_alloc_vg_poll(mt_device *dev) {
    if (!VG_ON() || !dev->alloc) return;
    mt_allocator *a = dev->alloc;
    mt_spin_lock(&a->lock);
    vg_settle(a);
    mt_spin_unlock(&a->lock);
}

/* For each part of [lo, hi) that lies in no live allocation: memory the program freed (or
 * never had), which an op may still touch. Lock held. */
static void vg_dead_parts(const mt_allocator *a, uintptr_t lo, uintptr_t hi, bool opening) {
    uintptr_t p = lo;
    while (p < hi) {
        size_t chunk = (p - arena_base(a)) / GRANULE;
        if (chunk >= a->num_chunks) return;
        segment *seg = atomic_load(&a->chunk_segment[chunk]);
        uintptr_t end = arena_base(a) + (chunk + 1) * GRANULE;
        if (seg) end = seg_addr(seg) + seg->size;
        if (end > hi) end = hi;
        for (block *b = seg ? seg->first : NULL; b && p < end; b = b->next) {
            uintptr_t blo = blk_addr(b), bhi = blo + b->size;
            if (bhi <= p) continue;
            if (bhi > end) bhi = end;
            if (b->state != BLK_ACTIVE && opening) VG_DEFINED(p, bhi - p);
            else if (b->state != BLK_ACTIVE) vg_noaccess(a, p, bhi);
            p = bhi;
        }
        if (p < end) { /* a released segment's range */
            if (opening) VG_DEFINED(p, end - p);
            else vg_noaccess(a, p, end);
            p = end;
        }
    }
}

void mt_alloc_vg_enter(mt_device *dev, const mt_buffer *bufs, uint32_t n) {
    mt_allocator *a = dev->alloc;
    mt_spin_lock(&a->lock);
    if (a->num_vg_running + n > a->cap_vg_running) {
        size_t cap = a->cap_vg_running * 2 + n + 16;
        vg_range *grown = realloc(a->vg_running, cap * sizeof *grown);
        if (!grown) { /* the op's accesses to freed memory get reported: no worse */
            mt_spin_unlock(&a->lock);
            return;
        }
        a->vg_running = grown;
        a->cap_vg_running = cap;
    }
    for (uint32_t i = 0; i < n; i++) {
        uintptr_t lo = (uintptr_t)bufs[i].ptr, hi = lo + bufs[i].bytes;
        if (lo - arena_base(a) >= a->arena_size) continue;
        a->vg_running[a->num_vg_running++] = (vg_range){hide_addr(lo), hide_addr(hi)};
        vg_dead_parts(a, lo, hi, true);
    }
    mt_spin_unlock(&a->lock);
}

void mt_alloc_vg_leave(mt_device *dev, const mt_buffer *bufs, uint32_t n) {
    mt_allocator *a = dev->alloc;
    mt_spin_lock(&a->lock);
    for (uint32_t i = 0; i < n; i++) {
        uintptr_t lo = (uintptr_t)bufs[i].ptr, hi = lo + bufs[i].bytes;
        for (size_t k = 0; k < a->num_vg_running; k++)
            if (~a->vg_running[k].lo == lo && ~a->vg_running[k].hi == hi) {
                a->vg_running[k] = a->vg_running[--a->num_vg_running];
                vg_dead_parts(a, lo, hi, false);
                break;
            }
    }
    mt_spin_unlock(&a->lock);
}

static void hand_out(mt_allocator *a, mt_pool *pool, block *b, size_t requested);

static block *take_block(mt_allocator *a, mt_pool *pool, stream_heap *sh, size_t size,
                         size_t requested) {
    bool small = size <= SMALL_REQUEST;
    heap *h = small ? &sh->small : &sh->large;
    block *b = heap_find(h, size);
    if (!b) return NULL;
    heap_remove(h, b);
    size_t rest = b->size - size;
    if (small ? rest >= MIN_BLOCK : rest > SMALL_REQUEST) {
        block *r = block_new(a);
        if (r) {
            r->addr_hidden = hide_addr(blk_addr(b) + size);
            r->size = rest;
            r->seg = b->seg;
            r->state = BLK_FREE;
            r->prev = b;
            r->next = b->next;
            if (b->next) b->next->prev = r;
            b->next = r;
            b->size = size;
            heap_insert(h, r);
        }
    }
    if (!table_insert(a, b)) {
        /* Could not index it: put it back and report out of host memory. */
        heap_insert(h, b);
        return NULL;
    }
    b->seg->busy_blocks++;
    hand_out(a, pool, b, requested);
    return b;
}

/* Block b of `pool`, its segment counted busy, is the program's now, for `requested` bytes.
 * Lock held. */
static void hand_out(mt_allocator *a, mt_pool *pool, block *b, size_t requested) {
    b->state = BLK_ACTIVE;
    b->requested = requested;
    pool->allocated += b->size;
    pool->active_blocks++;
    a->stats.allocated_bytes += b->size;
    update_peak(&a->stats.allocated_bytes_peak, a->stats.allocated_bytes);
    a->stats.requested_bytes += requested;
    a->stats.active_blocks++;
    update_peak(&a->stats.active_blocks_peak, a->stats.active_blocks);
    a->stats.active_bytes += b->size;
    update_peak(&a->stats.active_bytes_peak, a->stats.active_bytes);
    /* Handed out under a running op that still reads what was there (a range it touches
     * that was freed before): defined, so its reads are not taken for uninitialised ones. */
    VG_ALLOC(b, VG_ON() && vg_running_overlaps(a, blk_addr(b), blk_addr(b) + b->size));
}

/* ------------------------------------------------------------------ init */

mtiart_status mt_alloc_init(mt_device *dev) {
    mt_allocator *a = calloc(1, sizeof *a);
    MT_CHECK_ALLOC(a);
    /* Twice the capacity of address space keeps large segments from failing on a
     * fragmented range while the capacity itself is still respected. */
    a->arena_size = round_up(dev->capacity, GRANULE) * 2;
    void *base = mmap(NULL, a->arena_size + GRANULE, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        unsigned long long wanted = a->arena_size;
        free(a);
        return mt_set_error(MTIART_ERROR_OUT_OF_MEMORY,
                            "cannot reserve %llu bytes of address space for device %d", wanted,
                            dev->index);
    }
    a->base_hidden = hide_addr(round_up((uintptr_t)base, GRANULE));
    a->num_chunks = a->arena_size / GRANULE;
    a->chunk_segment = calloc(a->num_chunks, sizeof *a->chunk_segment);
    a->chunk_used = calloc((a->num_chunks + 63) / 64, sizeof *a->chunk_used);
    if (!a->chunk_segment || !a->chunk_used) {
        free(a->chunk_segment);
        free(a->chunk_used);
        free(a);
        return mt_oom();
    }
    a->default_pool.dev = dev;
    a->stats.capacity = dev->capacity;
    if (VG_ON()) a->quarantine_limit = mt_vg_quarantine_bytes;
    dev->alloc = a;
    return MTIART_SUCCESS;
}

/* ------------------------------------------------------------------ allocation */

static mtiart_status out_of_memory(mt_allocator *a, mt_device *dev, size_t size) {
    a->stats.num_ooms++;
    uint64_t allocated = a->stats.allocated_bytes, reserved = a->stats.reserved_bytes;
    mt_spin_unlock(&a->lock);
    pthread_mutex_lock(&observers_lock);
    size_t count = num_observers;
    observer copy[32];
    if (count > 32) count = 32;
    if (count) memcpy(copy, observers, count * sizeof *copy); /* NULL while none attached */
    pthread_mutex_unlock(&observers_lock);
    /* Observers are user code: the public calls they make name their own errors. */
    const char *api = mt_api_suspend();
    for (size_t i = 0; i < count; i++)
        copy[i].fn(dev->index, size, allocated, reserved, dev->capacity, copy[i].user_data);
    mt_api_resume(api);
    return mt_set_error(MTIART_ERROR_OUT_OF_MEMORY,
                        "device %d out of memory: tried to allocate %llu bytes; capacity "
                        "%llu bytes, %llu bytes allocated, %llu bytes reserved by the "
                        "allocator (free cached memory with empty_cache, or raise "
                        "MTIART_DEVICE_MEMORY)",
                        dev->index, (unsigned long long)size, (unsigned long long)dev->capacity,
                        (unsigned long long)allocated, (unsigned long long)reserved);
}

static mtiart_status alloc_from_heap(mt_allocator *a, mt_stream *s, mt_pool *pool, stream_heap *sh,
                                     size_t size, void **out) __attribute__((noinline));

mtiart_status mt_alloc(mt_device *dev, mt_stream *s, mt_pool *pool, size_t size, void **out) {
    mt_allocator *a = dev->alloc;
    if (size == 0) {
        *out = NULL;
        return MTIART_SUCCESS;
    }
    if (size > dev->capacity) {
        mt_spin_lock(&a->lock);
        return out_of_memory(a, dev, size);
    }
    size_t rounded = round_up(size, MIN_BLOCK);
    mt_spin_lock(&a->lock);
    a->stats.alloc_requests++;
    if (!pool) pool = &a->default_pool;
    if (a->pending) process_pending(a);
    if (VG_ON()) vg_settle(a);
    stream_heap *sh = heap_for(pool, s->id);
    block *b = sh && sh->num_cached ? cache_take(sh, rounded) : NULL;
    if (MT_UNLIKELY(!b)) return alloc_from_heap(a, s, pool, sh, size, out);
    hand_out(a, pool, b, size);
    mt_spin_unlock(&a->lock);
    *out = (void *)blk_addr(b);
    return MTIART_SUCCESS;
}

/* mt_alloc's request of `size` bytes for stream `s`, which its cache could not serve, from
 * the heap `sh` (NULL: none could be made). Lock held; released. */
static mtiart_status alloc_from_heap(mt_allocator *a, mt_stream *s, mt_pool *pool, stream_heap *sh,
                                     size_t size, void **out) {
    mt_device *dev = s->dev;
    if (!sh) {
        mt_spin_unlock(&a->lock);
        return mt_oom();
    }
    size_t rounded = round_up(size, MIN_BLOCK);
    block *b = take_block(a, pool, sh, rounded, size);
    if (!b && sh->num_cached) { /* merged back, the stream's cached blocks may fit */
        cache_drain(a, sh);
        b = take_block(a, pool, sh, rounded, size);
    }
    if (!b && adopt_segment(a, pool, sh, rounded)) b = take_block(a, pool, sh, rounded, size);
    if (!b) {
        bool small = rounded <= SMALL_REQUEST;
        size_t seg_size = small ? GRANULE : round_up(rounded, GRANULE);
        if (!segment_new(a, dev, pool, sh, seg_size, small)) {
            /* Give back cached memory and try once more, as torch does (its cudaFree
             * synchronizes; here the busy streams are waited for outside the lock). */
            a->stats.num_alloc_retries++;
            mt_spin_unlock(&a->lock);
            uint64_t horizon = settle_frees(dev);
            mt_spin_lock(&a->lock);
            if (a->pending) process_pending(a);
            release_cached(a, horizon);
            sh = heap_for(pool, s->id);
            if (!sh || !segment_new(a, dev, pool, sh, seg_size, small))
                return out_of_memory(a, dev, size);
        }
        b = take_block(a, pool, sh, rounded, size);
        if (!b) {
            mt_spin_unlock(&a->lock);
            return mt_oom();
        }
    }
    /* What a capture allocates, its graph produces: the input check never watches it. */
    b->alloc_capture = pool != &a->default_pool ? atomic_load(&s->capture_id) : 0;
    mt_spin_unlock(&a->lock);
    *out = (void *)blk_addr(b);
    return MTIART_SUCCESS;
}

static mt_allocator *allocator_of(const void *ptr, int *device) {
    uintptr_t p = (uintptr_t)ptr;
    for (int d = 0; d < mt_num_devices; d++) {
        mt_allocator *a = mt_devices[d].alloc;
        if (p - arena_base(a) < a->arena_size) { /* unsigned: p below the base wraps */
            if (device) *device = d;
            return a;
        }
    }
    return NULL;
}

/* The live block containing [p, p+bytes), or NULL; with `reserved_ok` (a graph being built)
 * also a memory node's allocation between launches. Lock held. */
static block *find_block(mt_allocator *a, uintptr_t p, size_t bytes, bool reserved_ok) {
    block **slot = table_slot(a, p);
    block *b = slot ? *slot : NULL;
    if (!b) {
        segment *seg = atomic_load(&a->chunk_segment[(p - arena_base(a)) / GRANULE]);
        if (!seg) return NULL;
        for (b = seg->first; b && !(p - blk_addr(b) < b->size); b = b->next) {}
        if (!b) return NULL;
    }
    if (b->state != BLK_ACTIVE && !(reserved_ok && b->state == BLK_RESERVED)) return NULL;
    /* Against the requested size, not the rounded one: the padding is not the caller's. */
    if (bytes > b->requested || p - blk_addr(b) > b->requested - bytes) return NULL;
    return b;
}

mtiart_status mt_pointer_device_quiet(const void *ptr, int *device) {
    if (!mt_initialized || !allocator_of(ptr, device)) return MTIART_ERROR_INVALID_POINTER;
    return MTIART_SUCCESS;
}

mtiart_status mt_check_range(const void *ptr, size_t bytes, int *device) {
    if (!mt_initialized)
        return mt_set_error(MTIART_ERROR_INVALID_POINTER, "runtime not initialised");
    mt_allocator *a = allocator_of(ptr, device);
    if (!a) return mt_set_error(MTIART_ERROR_INVALID_POINTER, "%p is not device memory", ptr);
    mt_spin_lock(&a->lock);
    block *b = find_block(a, (uintptr_t)ptr, bytes ? bytes : 1, false);
    mt_spin_unlock(&a->lock);
    if (!b)
        return mt_set_error(MTIART_ERROR_INVALID_POINTER,
                            "[%p, +%zu bytes) is not inside a live device allocation "
                            "(freed, out of bounds, or never allocated)",
                            ptr, bytes);
    return MTIART_SUCCESS;
}

mtiart_status mt_block_range_quiet(const void *ptr, uintptr_t *start, size_t *size) {
    mt_allocator *a = mt_initialized ? allocator_of(ptr, NULL) : NULL;
    if (!a) return MTIART_ERROR_INVALID_POINTER;
    mt_spin_lock(&a->lock);
    block *b = find_block(a, (uintptr_t)ptr, 1, false);
    if (b) {
        *start = blk_addr(b);
        *size = b->requested;
    }
    mt_spin_unlock(&a->lock);
    return b ? MTIART_SUCCESS : MTIART_ERROR_INVALID_POINTER;
}

mtiart_status mt_block_range(const void *ptr, uintptr_t *start, size_t *size) {
    mtiart_status st = mt_check_range(ptr, 1, NULL);
    if (st) return st;
    if (mt_block_range_quiet(ptr, start, size) != MTIART_SUCCESS) /* freed since the check */
        return mt_set_error(MTIART_ERROR_INVALID_POINTER, "%p is not inside a live allocation",
                            ptr);
    return MTIART_SUCCESS;
}

/* "kernel argument 2", "destination": the buffer's name in an error message. */
static const char *buffer_label(char *out, size_t cap, const mt_buffer *buf) {
    if (buf->arg >= 0) snprintf(out, cap, "%s %d", buf->name, (int)buf->arg);
    else snprintf(out, cap, "%s", buf->name);
    return out;
}

/* A buffer outside device `dev`'s arena: another device's memory, or no device's. */
static mtiart_status buffer_elsewhere(const mt_buffer *buf, const mt_device *dev,
                                      const char *owner) {
    char label[64];
    int found;
    if (allocator_of(buf->ptr, &found))
        return mt_set_error(MTIART_ERROR_INVALID_POINTER,
                            "%s points into device %d but the %s belongs to device %d",
                            buffer_label(label, sizeof label, buf), found, owner, dev->index);
    return mt_set_error(MTIART_ERROR_INVALID_POINTER, "%s: %p is not device memory",
                        buffer_label(label, sizeof label, buf), buf->ptr);
}

static mtiart_status mem_record(mt_allocator *a, mt_graph_mem *m, const mt_buffer *bufs,
                                block *const *blocks, uint32_t n, size_t node);

mtiart_status mt_check_buffers(mt_device *dev, const mt_buffer *bufs, uint32_t n, const char *owner,
                               mt_graph_mem *record, size_t node) {
    if (n == 0) return MTIART_SUCCESS;
    mt_allocator *a = dev->alloc;
    block *blocks[MT_MAX_ARGS];
    mt_spin_lock(&a->lock);
    for (uint32_t i = 0; i < n; i++) {
        uintptr_t p = (uintptr_t)bufs[i].ptr;
        uint64_t bytes = bufs[i].bytes;
        block *b = p - arena_base(a) < a->arena_size
                       ? find_block(a, p, bytes ? bytes : 1, record != NULL)
                       : NULL;
        if (MT_UNLIKELY(!b)) {
            mt_spin_unlock(&a->lock);
            if (p - arena_base(a) >= a->arena_size) return buffer_elsewhere(&bufs[i], dev, owner);
            char label[64];
            return mt_set_error(MTIART_ERROR_INVALID_POINTER,
                                "%s: [%p, +%llu bytes) is not inside a live device allocation "
                                "(freed, out of bounds, or never allocated)",
                                buffer_label(label, sizeof label, &bufs[i]), bufs[i].ptr,
                                (unsigned long long)bytes);
        }
        blocks[i] = b;
    }
    mtiart_status st = record ? mem_record(a, record, bufs, blocks, n, node) : MTIART_SUCCESS;
    mt_spin_unlock(&a->lock);
    return st;
}

/* ------------------------------------------------------------------ graph memory */

/*
 * What a graph, a capture in progress or an executable records of the device memory its
 * nodes touch: one entry per allocation (not per buffer: a chain of a thousand nodes on one
 * tensor has one entry, found through the block's tag without a lookup).
 *
 *   - An allocation outside the owner's own pool is held: the program's free of it only
 *     marks it BLK_HELD (counted as graph_held_bytes), and its memory returns, in stream
 *     order, when the last holder is gone. Blocks of the owner's pool are not held: blocks
 *     freed during a capture are reused by later captures sharing the pool, as in PyTorch.
 *   - Every entry keeps the allocation's liveness cell, whose `alive` the program's free
 *     clears for good (memory handed out again is another allocation, with its own cell).
 *     An executable instantiated with the input check lists the entries whose contents a
 *     replay reads before any node of the graph wrote them: its inputs.
 */

#define NO_NODE UINT32_MAX

typedef struct mem_entry {
    block *held;             /* the block this owner holds, or NULL */
    block *blk;              /* the block as recorded: valid while `live` is alive */
    mt_live *live;           /* the allocation's liveness (a reference) */
    uint64_t address, bytes; /* the range of its first read as an input */
    uint32_t reader;         /* the node of that read (NO_NODE: never read as an input) */
    bool written;            /* a node wrote it before any read as an input */
    bool produced;           /* allocated during the capture: never an input */
} mem_entry;

struct mt_graph_mem {
    mt_device *dev;
    const mt_pool *pool; /* the owner's own pool (not held), or NULL */
    uint64_t capture_id; /* allocations of this capture are produced, not inputs */
    uint64_t serial;     /* names the record in blocks' tags */
    mem_entry *items;
    uint32_t count, cap;
    uint32_t *slots; /* entry index + 1 by liveness cell, open addressing */
    uint32_t slot_cap;
    mt_live **inputs; /* copies made for the input check: input cells, by first reader */
    uint32_t *input_items;
    uint32_t num_inputs;
    mt_pool **pools; /* pools of bodies merged in (mt_graph_mem_merge), retained */
    uint32_t num_pools;
};

static atomic_uint_least64_t next_mem_serial = 1;

static void live_unref(mt_live *live) {
    if (atomic_fetch_sub_explicit(&live->refs, 1, memory_order_acq_rel) == 1) free(live);
}

/* The program freed (or gave up) block b: its graphs see it dead from now on. Lock held. */
static void live_kill(block *b) {
    if (!b->live) return;
    atomic_store_explicit(&b->live->alive, 0, memory_order_release);
    live_unref(b->live);
    b->live = NULL;
}

static inline size_t live_hash(const mt_live *live, uint32_t cap) {
    return (size_t)(((uint64_t)(uintptr_t)live >> 4) * 0x9E3779B97F4A7C15ull >> 32) & (cap - 1);
}

static void mem_index_put(mt_graph_mem *m, uint32_t item) {
    size_t j = live_hash(m->items[item].live, m->slot_cap);
    while (m->slots[j]) j = (j + 1) & (m->slot_cap - 1);
    m->slots[j] = item + 1;
}

/* Room for `more` entries, so that recording cannot fail halfway. */
static bool mem_reserve(mt_graph_mem *m, uint32_t more) {
    if (m->count + more > m->cap) {
        uint32_t cap = m->cap ? m->cap : 8;
        while (cap < m->count + more) cap *= 2;
        mem_entry *grown = realloc(m->items, cap * sizeof *grown);
        if (!grown) return false;
        m->items = grown;
        m->cap = cap;
    }
    if ((m->count + more) * 2 > m->slot_cap) {
        uint32_t cap = m->slot_cap ? m->slot_cap : 16;
        while ((m->count + more) * 2 > cap) cap *= 2;
        uint32_t *slots = calloc(cap, sizeof *slots);
        if (!slots) return false;
        free(m->slots);
        m->slots = slots;
        m->slot_cap = cap;
        for (uint32_t i = 0; i < m->count; i++) mem_index_put(m, i);
    }
    return true;
}

/* The entry of block b's allocation, added if new (room reserved, cell made). Lock held. */
static mem_entry *mem_entry_of(mt_allocator *a, mt_graph_mem *m, block *b) {
    if (b->mem_serial == m->serial && b->mem_index < m->count &&
        m->items[b->mem_index].live == b->live)
        return &m->items[b->mem_index];
    for (size_t j = live_hash(b->live, m->slot_cap); m->slots[j]; j = (j + 1) & (m->slot_cap - 1))
        if (m->items[m->slots[j] - 1].live == b->live) {
            b->mem_serial = m->serial;
            b->mem_index = m->slots[j] - 1;
            return &m->items[b->mem_index];
        }
    uint32_t index = m->count++;
    mem_entry *e = &m->items[index];
    *e = (mem_entry){.live = b->live, .blk = b, .reader = NO_NODE};
    atomic_fetch_add_explicit(&b->live->refs, 1, memory_order_relaxed);
    /* What the capture allocated, and memory nodes' allocations, the graph produces. */
    e->produced = (b->alloc_capture && b->alloc_capture == m->capture_id) || b->galloc;
    if (b->seg->pool != m->pool) {
        b->holds++;
        e->held = b;
    }
    (void)a;
    mem_index_put(m, index);
    b->mem_serial = m->serial;
    b->mem_index = index;
    return e;
}

static mtiart_status mem_record(mt_allocator *a, mt_graph_mem *m, const mt_buffer *bufs,
                                block *const *blocks, uint32_t n, size_t node) {
    if (!mem_reserve(m, n)) return mt_oom();
    for (uint32_t i = 0; i < n; i++) {
        block *b = blocks[i];
        if (b->live) continue;
        b->live = malloc(sizeof *b->live);
        if (!b->live) return mt_oom();
        atomic_init(&b->live->alive, 1);
        atomic_init(&b->live->refs, 1); /* the block's */
    }
    /* The node's reads come before its writes: an in-place update reads its input. */
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < n; i++) {
            mem_entry *e = mem_entry_of(a, m, blocks[i]);
            if (pass == 0 && (bufs[i].access & MTIART_ARG_BUFFER_IN) && e->reader == NO_NODE &&
                !e->written && !e->produced) {
                e->reader = node > NO_NODE - 1 ? NO_NODE - 1 : (uint32_t)node;
                e->address = (uint64_t)(uintptr_t)bufs[i].ptr;
                e->bytes = bufs[i].bytes;
            }
            if (pass == 1 && (bufs[i].access & MTIART_ARG_BUFFER_OUT)) e->written = true;
        }
    return MTIART_SUCCESS;
}

mt_graph_mem *mt_graph_mem_new(mt_device *dev, const mt_pool *pool, uint64_t capture_id) {
    mt_graph_mem *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->dev = dev;
    m->pool = pool;
    m->capture_id = capture_id;
    m->serial = atomic_fetch_add(&next_mem_serial, 1);
    return m;
}

static void hold_release(mt_allocator *a, block *b);

void mt_graph_mem_free(mt_graph_mem *m) {
    if (!m) return;
    mt_allocator *a = m->dev->alloc;
    mt_spin_lock(&a->lock);
    for (uint32_t i = 0; i < m->count; i++)
        if (m->items[i].held) hold_release(a, m->items[i].held);
    mt_spin_unlock(&a->lock);
    for (uint32_t i = 0; i < m->num_pools; i++) mt_pool_release(m->pools[i]);
    free(m->pools);
    for (uint32_t i = 0; i < m->count; i++) live_unref(m->items[i].live);
    free(m->items);
    free(m->slots);
    free(m->inputs);
    free(m->input_items);
    free(m);
}

static int by_reader(const void *x, const void *y, void *items) {
    const mem_entry *e = items;
    uint32_t rx = e[*(const uint32_t *)x].reader, ry = e[*(const uint32_t *)y].reader;
    return rx < ry ? -1 : rx > ry;
}

mt_graph_mem *mt_graph_mem_copy(const mt_graph_mem *m, bool inputs) {
    mt_graph_mem *c = mt_graph_mem_new(m->dev, m->pool, m->capture_id);
    if (!c || !mem_reserve(c, m->count)) goto oom;
    if (m->num_pools) {
        if (!(c->pools = malloc(m->num_pools * sizeof *c->pools))) goto oom;
        for (uint32_t i = 0; i < m->num_pools; i++) mt_pool_retain(m->pools[i]);
        memcpy(c->pools, m->pools, m->num_pools * sizeof *c->pools);
        c->num_pools = m->num_pools;
    }
    if (inputs) {
        size_t n = 0;
        for (uint32_t i = 0; i < m->count; i++) n += m->items[i].reader != NO_NODE;
        c->inputs = malloc((n ? n : 1) * sizeof *c->inputs);
        c->input_items = malloc((n ? n : 1) * sizeof *c->input_items);
        if (!c->inputs || !c->input_items) goto oom;
        for (uint32_t i = 0; i < m->count; i++)
            if (m->items[i].reader != NO_NODE) c->input_items[c->num_inputs++] = i;
        qsort_r(c->input_items, c->num_inputs, sizeof *c->input_items, by_reader, m->items);
        for (uint32_t i = 0; i < c->num_inputs; i++)
            c->inputs[i] = m->items[c->input_items[i]].live;
    }
    mt_allocator *a = m->dev->alloc;
    mt_spin_lock(&a->lock);
    for (uint32_t i = 0; i < m->count; i++) {
        c->items[i] = m->items[i];
        atomic_fetch_add_explicit(&m->items[i].live->refs, 1, memory_order_relaxed);
        if (m->items[i].held) m->items[i].held->holds++;
        mem_index_put(c, i);
    }
    c->count = m->count;
    mt_spin_unlock(&a->lock);
    return c;
oom:
    mt_graph_mem_free(c);
    mt_oom();
    return NULL;
}

mt_graph_mem *mt_graph_mem_holds_of(const mt_graph_mem *m) {
    mt_graph_mem *c = mt_graph_mem_copy(m, false);
    for (uint32_t i = 0; c && i < c->count; i++) {
        c->items[i].reader = NO_NODE;
        c->items[i].written = true;
    }
    return c;
}

void mt_graph_mem_forget_reads(mt_graph_mem *m, size_t node) {
    for (uint32_t i = 0; i < m->count; i++)
        if (m->items[i].reader == node) m->items[i].reader = NO_NODE;
}

mtiart_status mt_graph_mem_merge(mt_graph_mem *m, const mt_graph_mem *body, size_t node) {
    if (!body->count && !body->num_pools) return MTIART_SUCCESS;
    /* The body's pool (and those it retains) stays mapped: what the body wrote there and the
     * program freed since is still the body's to use. */
    uint32_t np = body->num_pools + 1;
    mt_pool **grown = realloc(m->pools, (m->num_pools + np) * sizeof *grown);
    if (!grown || !mem_reserve(m, body->count)) {
        if (grown) m->pools = grown;
        return mt_oom();
    }
    m->pools = grown;
    for (uint32_t k = 0; k < np; k++) {
        mt_pool *pool = k ? body->pools[k - 1] : (mt_pool *)body->pool;
        bool have = !pool || pool == m->pool;
        for (uint32_t i = 0; i < m->num_pools && !have; i++) have = m->pools[i] == pool;
        if (have) continue;
        mt_pool_retain(pool);
        m->pools[m->num_pools++] = pool;
    }
    uint32_t reader = node > NO_NODE - 1 ? NO_NODE - 1 : (uint32_t)node;
    mt_allocator *a = m->dev->alloc;
    mt_spin_lock(&a->lock);
    for (uint32_t i = 0; i < body->count; i++) {
        const mem_entry *from = &body->items[i];
        mem_entry *e = NULL;
        for (size_t j = live_hash(from->live, m->slot_cap); m->slots[j] && !e;
             j = (j + 1) & (m->slot_cap - 1))
            if (m->items[m->slots[j] - 1].live == from->live) e = &m->items[m->slots[j] - 1];
        if (!e) {
            uint32_t index = m->count++;
            e = &m->items[index];
            *e = (mem_entry){.live = from->live, .blk = from->blk, .reader = NO_NODE};
            atomic_fetch_add_explicit(&from->live->refs, 1, memory_order_relaxed);
            /* Held by the body, or the program's still (then the block is as recorded). */
            block *b = from->held                                                       ? from->held
                       : atomic_load_explicit(&from->live->alive, memory_order_acquire) ? from->blk
                                                                                        : NULL;
            if (b && b->seg->pool != m->pool) {
                b->holds++;
                e->held = b;
            }
            mem_index_put(m, index);
        }
        if (from->reader != NO_NODE && e->reader == NO_NODE && !e->written && !e->produced) {
            e->reader = reader;
            e->address = from->address;
            e->bytes = from->bytes;
        }
        if (from->written || from->produced) e->written = true;
    }
    mt_spin_unlock(&a->lock);
    return MTIART_SUCCESS;
}

long mt_graph_mem_dead_input(const mt_graph_mem *m) {
    mt_live *const *inputs = m->inputs;
    for (uint32_t i = 0, n = m->num_inputs; i < n; i++)
        if (MT_UNLIKELY(!atomic_load_explicit(&inputs[i]->alive, memory_order_acquire)))
            return (long)i;
    return -1;
}

void mt_graph_mem_input(const mt_graph_mem *m, size_t i, uint32_t *node, uint64_t *address,
                        uint64_t *bytes, bool *reused) {
    const mem_entry *e = &m->items[m->input_items[i]];
    *node = e->reader;
    *address = e->address;
    *bytes = e->bytes;
    mt_allocator *a = m->dev->alloc;
    mt_spin_lock(&a->lock);
    *reused = find_block(a, (uintptr_t)e->address, 1, false) != NULL;
    mt_spin_unlock(&a->lock);
}

/* ------------------------------------------------------------------ public API */

MTIART_API mtiart_status mtiart_malloc_async(mtiart_stream stream, size_t size, void **ptr) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    MT_CHECK_NOT_NULL(ptr);
    mt_pool *pool = NULL;
    if (atomic_load(&s->capture)) { /* an alloc node, in a capture that makes memory nodes */
        mtiart_status st = mt_capture_mem_alloc(s, size, ptr);
        if (st != MTIART_ERROR_NOT_CAPTURING) return st;
        pool = mt_capture_pool_retain(s); /* or the capture's pool */
    }
    mtiart_status st = mt_alloc(s->dev, s, pool, size, ptr);
    if (pool) mt_pool_release(pool);
    if (st == MTIART_SUCCESS) mt_memory_allocated(*ptr, size, s->dev->index, s->id);
    return st;
}

MTIART_API mtiart_status mtiart_malloc(int device, size_t size, void **ptr) {
    MT_API_ENTRY();
    LOOKUP_DEVICE(dev, device);
    MT_CHECK_NOT_NULL(ptr);
    mt_pool *pool = NULL;
    if (atomic_load(&dev->default_stream->capture)) {
        mtiart_status st = mt_capture_mem_alloc(dev->default_stream, size, ptr);
        if (st != MTIART_ERROR_NOT_CAPTURING) return st;
        pool = mt_capture_pool_retain(dev->default_stream);
    }
    mtiart_status st = mt_alloc(dev, dev->default_stream, pool, size, ptr);
    if (pool) mt_pool_release(pool);
    if (st == MTIART_SUCCESS) mt_memory_allocated(*ptr, size, dev->index, dev->default_stream->id);
    return st;
}

/* Block b is done with, by the program (its free) and by every graph: it returns to its heap
 * now, or once the other streams that use it are past the free. `announce`: memcheck has
 * not been told of the free yet. Lock held. */
static inline void retire_block(mt_allocator *a, block **slot, block *b, bool announce) {
    mt_pool *pool = b->seg->pool;
    if (b->num_uses == 0) {
        a->stats.active_blocks--;
        a->stats.active_bytes -= b->size;
        pool->active_blocks--;
        if (announce) vg_block_freed(a, b);
        if (cache_put(a, b)) return;
        table_erase(a, slot);
        release_block(a, b);
        return;
    }
    if (announce) vg_block_freed(a, b); /* the other streams' work is covered as it runs */
    b->state = BLK_PENDING;
    b->fprev = NULL;
    b->fnext = a->pending;
    if (a->pending) a->pending->fprev = b;
    a->pending = b;
}

/* Block b is the program's no more: held while graphs use it (they still replay into it,
 * and it waits for the last of them: hold_release), retired otherwise. Lock held. */
static void hold_or_retire(mt_allocator *a, block **slot, block *b, bool announce) {
    if (!b->holds) {
        retire_block(a, slot, b, announce);
        return;
    }
    b->state = BLK_HELD;
    b->fprev = NULL;
    b->fnext = a->held;
    if (a->held) a->held->fprev = b;
    a->held = b;
    a->more.graph_held_bytes += b->size;
    a->more.graph_held_blocks++;
    update_peak(&a->more.graph_held_bytes_peak, a->more.graph_held_bytes);
    if (announce) vg_block_freed(a, b); /* the replays are covered as they run */
}

/* The program frees live block b (at `slot` in the table). Lock held. */
static void user_free(mt_allocator *a, block **slot, block *b) {
    a->stats.free_requests++;
    a->stats.allocated_bytes -= b->size;
    a->stats.requested_bytes -= b->requested;
    b->seg->pool->allocated -= b->size;
    live_kill(b);
    /* Other streams use the block: it waits until their work so far is done. Work that a
     * capture records does not run until replay, so such frees wait for the capture's
     * end, when the pool's ordering takes over (as in PyTorch). */
    for (uint32_t i = 0; i < b->num_uses; i++) {
        mt_stream *u = b->uses[i].stream;
        b->uses[i].target = atomic_load(&u->enqueued);
        uint64_t capture_id = atomic_load(&u->capture_id);
        if (capture_id) b->capture_id = capture_id;
    }
    if (b->galloc) {
        /* A memory node's allocation goes back to its graph for the next launch. */
        b->state = BLK_RESERVED;
        vg_block_freed(a, b);
        return;
    }
    hold_or_retire(a, slot, b, true);
}

/* A graph, capture or executable drops its hold on block b. Lock held. */
static void hold_release(mt_allocator *a, block *b) {
    if (--b->holds || b->state != BLK_HELD) return;
    if (b->fprev) b->fprev->fnext = b->fnext;
    else a->held = b->fnext;
    if (b->fnext) b->fnext->fprev = b->fprev;
    b->fprev = b->fnext = NULL;
    a->more.graph_held_bytes -= b->size;
    a->more.graph_held_blocks--;
    retire_block(a, table_slot(a, blk_addr(b)), b, false);
}

/* Make `s` one of the streams that use block b (record_stream). Lock held. */
static bool add_use(block *b, mt_stream *s) {
    if (b->seg->owner->stream_id == s->id) return true;
    for (uint32_t i = 0; i < b->num_uses; i++)
        if (b->uses[i].stream == s) return true;
    if (b->num_uses == b->cap_uses) {
        uint32_t cap = b->cap_uses ? b->cap_uses * 2 : 2;
        stream_use *grown = realloc(b->uses, cap * sizeof *grown);
        if (!grown) return false;
        b->uses = grown;
        b->cap_uses = cap;
    }
    mt_stream_ref(s);
    b->uses[b->num_uses++] = (stream_use){s, 0};
    return true;
}

/* mtiart_free (on NULL) and mtiart_free_async (on a stream). */
static mtiart_status free_on(void *ptr, mt_stream *s) {
    int device;
    mt_allocator *a = mt_initialized ? allocator_of(ptr, &device) : NULL;
    if (!a) return mt_set_error(MTIART_ERROR_INVALID_POINTER, "%p is not device memory", ptr);
    if (s && device != s->dev->index)
        return mt_set_error(MTIART_ERROR_INVALID_POINTER,
                            "%p points into device %d but the stream belongs to device %d", ptr,
                            device, s->dev->index);
    /* Before the block is free (outside the spinlock): no allocation can reuse the address
     * until it is, and a failing free names no allocation that has notes. */
    mt_memory_freed(ptr);
    mt_spin_lock(&a->lock);
    block **slot = table_slot(a, (uintptr_t)ptr);
    if (!slot || (*slot)->state != BLK_ACTIVE) {
        /* A memory node's allocation between launches: freed in the capture making it. */
        mt_graph_alloc *ga = slot && (*slot)->state == BLK_RESERVED ? (*slot)->galloc : NULL;
        mt_stream *on = ga ? (s ? s : ga->stream) : NULL;
        if (on) mt_stream_ref(on);
        mt_spin_unlock(&a->lock);
        if (on) {
            mtiart_status st = mt_capture_mem_free(on, ptr);
            mt_stream_unref(on);
            if (st != MTIART_ERROR_NOT_CAPTURING) return st;
        }
        return mt_set_error(MTIART_ERROR_INVALID_POINTER,
                            "%p is not the start of a live device allocation "
                            "(double free, an interior pointer, or a graph's allocation "
                            "between its launches)",
                            ptr);
    }
    block *b = *slot;
    if (s && !add_use(b, s)) {
        mt_spin_unlock(&a->lock);
        return mt_oom();
    }
    user_free(a, slot, b);
    mt_spin_unlock(&a->lock);
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_free(void *ptr) {
    MT_API_ENTRY();
    if (!ptr) return MTIART_SUCCESS;
    return free_on(ptr, NULL);
}

MTIART_API mtiart_status mtiart_free_async(void *ptr, mtiart_stream stream) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    if (!ptr) return MTIART_SUCCESS;
    if (atomic_load(&s->capture)) { /* a free node, in a capture that makes memory nodes */
        mtiart_status st = mt_capture_mem_free(s, ptr);
        if (st != MTIART_ERROR_NOT_CAPTURING) return st;
    }
    return free_on(ptr, s);
}

/* ------------------------------------------------------------------ memory nodes */

/*
 * CUDA's graph-memory model, for C programs that want it (captures allocate from the
 * graph's pool otherwise). A memory node's allocation is a block reserved for its graph:
 * its address is fixed for the graph's lifetime. Between launches it is BLK_RESERVED (no
 * live allocation: eager work cannot use it, nodes of graphs may); a launch of the graph
 * that allocates and does not free it makes it the program's (BLK_ACTIVE) until the program
 * frees it (mtiart_free, mtiart_free_async) or a graph's free node does, which makes it
 * BLK_RESERVED again. The block goes back to its pool when the last node naming it is
 * destroyed (or becomes an ordinary allocation, if it is live then).
 */
mtiart_status mt_graph_alloc_new(mt_device *dev, mt_stream *s, mt_pool *pool, size_t size,
                                 mt_graph_alloc **out, void **ptr) {
    if (size == 0)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "a memory node needs at least 1 byte");
    mt_graph_alloc *ga = calloc(1, sizeof *ga);
    MT_CHECK_ALLOC(ga);
    void *p;
    mtiart_status st = mt_alloc(dev, s, pool, size, &p);
    if (st) {
        free(ga);
        return st;
    }
    mt_allocator *a = dev->alloc;
    mt_spin_lock(&a->lock);
    block *b = *table_slot(a, (uintptr_t)p);
    b->state = BLK_RESERVED;
    b->galloc = ga;
    a->stats.allocated_bytes -= b->size;
    a->stats.requested_bytes -= b->requested;
    b->seg->pool->allocated -= b->size;
    a->more.graph_alloc_bytes += b->size;
    update_peak(&a->more.graph_alloc_bytes_peak, a->more.graph_alloc_bytes);
    vg_block_freed(a, b); /* the program's only while launched */
    ga->refs = 1;
    ga->dev = dev;
    ga->b = b;
    mt_stream_ref(s);
    ga->stream = s;
    mt_spin_unlock(&a->lock);
    *out = ga;
    *ptr = p;
    return MTIART_SUCCESS;
}

void mt_graph_alloc_ref(mt_graph_alloc *ga) {
    mt_allocator *a = ga->dev->alloc;
    mt_spin_lock(&a->lock);
    ga->refs++;
    mt_spin_unlock(&a->lock);
}

void mt_graph_alloc_unref(mt_graph_alloc *ga) {
    mt_allocator *a = ga->dev->alloc;
    mt_spin_lock(&a->lock);
    if (--ga->refs) {
        mt_spin_unlock(&a->lock);
        return;
    }
    block *b = ga->b;
    b->galloc = NULL;
    a->more.graph_alloc_bytes -= b->size;
    if (b->state == BLK_RESERVED) {
        /* Launches are over (their executables are gone); eager work on it since may not
         * be: its streams' work so far completes first. */
        for (uint32_t i = 0; i < b->num_uses; i++)
            b->uses[i].target = atomic_load(&b->uses[i].stream->enqueued);
        hold_or_retire(a, table_slot(a, blk_addr(b)), b, false);
    } /* else live: an ordinary allocation of the program's from now on */
    mt_spin_unlock(&a->lock);
    mt_stream_unref(ga->stream);
    free(ga);
}

mt_graph_alloc *mt_graph_alloc_find(mt_device *dev, const void *ptr) {
    mt_allocator *a = dev->alloc;
    if ((uintptr_t)ptr - arena_base(a) >= a->arena_size) return NULL;
    mt_spin_lock(&a->lock);
    block **slot = table_slot(a, (uintptr_t)ptr);
    mt_graph_alloc *ga = slot ? (*slot)->galloc : NULL;
    if (ga) ga->refs++;
    mt_spin_unlock(&a->lock);
    return ga;
}

void *mt_graph_alloc_address(const mt_graph_alloc *ga, size_t *bytes) {
    if (bytes) *bytes = ga->b->requested;
    return (void *)blk_addr(ga->b);
}

/* The program's allocation b becomes the graph's again, freed on stream `on`. Lock held. */
static void galloc_free(mt_allocator *a, block *b, mt_stream *on) {
    a->stats.free_requests++;
    a->stats.allocated_bytes -= b->size;
    a->stats.requested_bytes -= b->requested;
    b->seg->pool->allocated -= b->size;
    live_kill(b);
    if (on) add_use(b, on); /* on failure, only the final release's ordering is coarser */
    b->state = BLK_RESERVED;
    vg_block_freed(a, b);
}

mtiart_status mt_graph_allocs_check(const mt_mem_node *nodes, size_t n, bool auto_free) {
    if (n == 0) return MTIART_SUCCESS;
    mt_allocator *a = nodes[0].alloc->dev->alloc;
    mtiart_status st = MTIART_SUCCESS;
    mt_spin_lock(&a->lock);
    for (size_t i = 0; i < n && !st; i++) {
        const mt_mem_node *m = &nodes[i];
        block *b = m->alloc->b;
        bool live = b->state == BLK_ACTIVE;
        if (m->kind == MT_OP_MEM_ALLOC && live && !auto_free)
            st = mt_set_error(MTIART_ERROR_NOT_PERMITTED,
                              "graph node %u allocated [%p, +%zu bytes) at an earlier launch "
                              "and it was not freed since: free it (mtiart_free, "
                              "mtiart_free_async, or a graph's free node) before launching "
                              "again, or instantiate with "
                              "MTIART_GRAPH_INSTANTIATE_AUTO_FREE_ON_LAUNCH",
                              m->node, (void *)blk_addr(b), (size_t)b->requested);
        else if (m->kind == MT_OP_MEM_FREE && !m->own && !live)
            st = mt_set_error(MTIART_ERROR_NOT_PERMITTED,
                              "graph node %u frees [%p, +%zu bytes), which is not live: a "
                              "launch of the graph that allocates it must come first, and no "
                              "free since",
                              m->node, (void *)blk_addr(b), (size_t)b->requested);
    }
    mt_spin_unlock(&a->lock);
    return st;
}

void mt_graph_allocs_launched(const mt_mem_node *nodes, size_t n, mt_stream *s, bool auto_free) {
    if (n == 0) return;
    mt_allocator *a = nodes[0].alloc->dev->alloc;
    mt_spin_lock(&a->lock);
    for (size_t i = 0; i < n; i++) {
        const mt_mem_node *m = &nodes[i];
        block *b = m->alloc->b;
        if (m->kind == MT_OP_MEM_FREE) {
            if (!m->own && b->state == BLK_ACTIVE) galloc_free(a, b, s);
            continue;
        }
        if (b->state == BLK_ACTIVE && auto_free) galloc_free(a, b, s);
        add_use(b, s); /* the replay's stream, for the final release */
        if (m->own || b->state != BLK_RESERVED) continue; /* freed inside the replay */
        /* The program's from now on, as after mtiart_malloc_async on `s`. */
        b->state = BLK_ACTIVE;
        a->stats.allocated_bytes += b->size;
        update_peak(&a->stats.allocated_bytes_peak, a->stats.allocated_bytes);
        a->stats.requested_bytes += b->requested;
        b->seg->pool->allocated += b->size;
        VG_ALLOC(b, 1);
    }
    mt_spin_unlock(&a->lock);
}

MTIART_API mtiart_status mtiart_record_stream(void *ptr, mtiart_stream stream) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    int device;
    mt_allocator *a = ptr ? allocator_of(ptr, &device) : NULL;
    if (!a || !mt_initialized)
        return mt_set_error(MTIART_ERROR_INVALID_POINTER, "%p is not device memory", ptr);
    /* Refused as every other call mixing devices is: the stream cannot use the block. */
    if (device != s->dev->index)
        return mt_set_error(MTIART_ERROR_INVALID_POINTER,
                            "%p points into device %d but the stream belongs to device %d", ptr,
                            device, s->dev->index);
    mt_spin_lock(&a->lock);
    block *b = find_block(a, (uintptr_t)ptr, 1, false);
    if (!b) {
        mt_spin_unlock(&a->lock);
        return mt_set_error(MTIART_ERROR_INVALID_POINTER, "%p is not a live device allocation",
                            ptr);
    }
    bool ok = add_use(b, s);
    mt_spin_unlock(&a->lock);
    return ok ? MTIART_SUCCESS : mt_oom();
}

MTIART_API mtiart_status mtiart_pointer_get_device(const void *ptr, int *device) {
    MT_API_ENTRY();
    MT_CHECK_NOT_NULL(device);
    /* Out-parameters are written only on success: a freed pointer still lies in a
     * device's arena, and mt_check_range reports that device before it fails. */
    int found;
    mtiart_status st = mt_check_range(ptr, 1, &found);
    if (st == MTIART_SUCCESS) *device = found;
    return st;
}

MTIART_API mtiart_status mtiart_empty_cache(int device) {
    MT_API_ENTRY();
    LOOKUP_DEVICE(dev, device);
    mtiart_status st = mt_check_unsafe(NULL, NULL);
    if (st) return st;
    uint64_t horizon = settle_frees(dev);
    mt_allocator *a = dev->alloc;
    mt_spin_lock(&a->lock);
    if (a->pending) process_pending(a);
    release_cached(a, horizon);
    mt_spin_unlock(&a->lock);
    return MTIART_SUCCESS;
}

/* The public struct's fields, with the free pieces of partly used segments counted. */
static mtiart_memory_stats current_stats(mt_allocator *a) {
    mtiart_memory_stats stats = a->stats;
    stats.inactive_split_blocks = stats.inactive_split_bytes = 0;
    for (mt_pool *pool = &a->default_pool; pool;
         pool = pool == &a->default_pool ? a->pools : pool->next)
        for (segment *seg = pool->segments; seg; seg = seg->next) {
            if (!seg->busy_blocks) continue;
            /* Cached blocks count as merged with their free neighbours, as they will be. */
            uint64_t pieces = 0, bytes = 0;
            bool in_use = false, after_free = false;
            for (block *b = seg->first; b; b = b->next) {
                bool free = b->state == BLK_FREE || b->state == BLK_CACHED;
                in_use |= !free;
                pieces += free && !after_free;
                bytes += free ? b->size : 0;
                after_free = free;
            }
            if (!in_use) continue; /* only cached blocks: a whole free segment once merged */
            stats.inactive_split_blocks += pieces;
            stats.inactive_split_bytes += bytes;
        }
    return stats;
}

MTIART_API mtiart_status mtiart_memory_get_stats(int device, mtiart_memory_stats *stats) {
    MT_API_ENTRY();
    LOOKUP_DEVICE(dev, device);
    MT_CHECK_NOT_NULL(stats);
    mt_allocator *a = dev->alloc;
    mt_spin_lock(&a->lock);
    *stats = current_stats(a);
    mt_spin_unlock(&a->lock);
    return MTIART_SUCCESS;
}

/* The keys of mtiart_memory_get_stat: first the struct's fields, in its order. */
static const char *const stat_names[] = {
    "allocated_bytes",
    "allocated_bytes_peak",
    "requested_bytes",
    "reserved_bytes",
    "reserved_bytes_peak",
    "active_blocks",
    "active_blocks_peak",
    "active_bytes",
    "active_bytes_peak",
    "inactive_split_blocks",
    "inactive_split_bytes",
    "segments",
    "segments_peak",
    "alloc_requests",
    "free_requests",
    "segment_allocs",
    "segment_frees",
    "num_alloc_retries",
    "num_ooms",
    "capacity",
    "private_pools",
    "graph_held_bytes",
    "graph_held_bytes_peak",
    "graph_held_blocks",
    "graph_alloc_bytes",
    "graph_alloc_bytes_peak",
    "valgrind_quarantine_bytes",
};
#define NUM_STATS (sizeof stat_names / sizeof *stat_names)
#define NUM_STRUCT_STATS (sizeof(mtiart_memory_stats) / sizeof(uint64_t))
_Static_assert(sizeof(mtiart_memory_stats) == NUM_STRUCT_STATS * sizeof(uint64_t),
               "mtiart_memory_stats holds uint64_t fields only");
_Static_assert(NUM_STRUCT_STATS == MTIART_STAT_GRAPH_HELD_BYTES, "a key per struct field");
_Static_assert(NUM_STATS == MTIART_STAT_VALGRIND_QUARANTINE_BYTES + 1, "a name per key");

MTIART_API const char *mtiart_memory_stat_name(mtiart_memory_stat key) {
    return (unsigned)key < NUM_STATS ? stat_names[key] : NULL;
}

MTIART_API mtiart_status mtiart_memory_get_stat(int device, mtiart_memory_stat key,
                                                uint64_t *value) {
    MT_API_ENTRY();
    LOOKUP_DEVICE(dev, device);
    MT_CHECK_NOT_NULL(value);
    if ((unsigned)key >= NUM_STATS)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "unknown memory statistic %d (0..%d)",
                            (int)key, (int)NUM_STATS - 1);
    mt_allocator *a = dev->alloc;
    uint64_t v;
    mt_spin_lock(&a->lock);
    if ((unsigned)key < NUM_STRUCT_STATS) {
        mtiart_memory_stats stats =
            key == MTIART_STAT_INACTIVE_SPLIT_BLOCKS || key == MTIART_STAT_INACTIVE_SPLIT_BYTES
                ? current_stats(a)
                : a->stats;
        memcpy(&v, (const char *)&stats + (unsigned)key * sizeof v, sizeof v);
    } else {
        switch (key) {
        case MTIART_STAT_GRAPH_HELD_BYTES: v = a->more.graph_held_bytes; break;
        case MTIART_STAT_GRAPH_HELD_BYTES_PEAK: v = a->more.graph_held_bytes_peak; break;
        case MTIART_STAT_GRAPH_HELD_BLOCKS: v = a->more.graph_held_blocks; break;
        case MTIART_STAT_GRAPH_ALLOC_BYTES: v = a->more.graph_alloc_bytes; break;
        case MTIART_STAT_GRAPH_ALLOC_BYTES_PEAK: v = a->more.graph_alloc_bytes_peak; break;
        default: v = a->quarantine_bytes; break;
        }
    }
    mt_spin_unlock(&a->lock);
    *value = v;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_memory_reset_peak_stats(int device) {
    MT_API_ENTRY();
    LOOKUP_DEVICE(dev, device);
    mt_allocator *a = dev->alloc;
    mt_spin_lock(&a->lock);
    a->stats.allocated_bytes_peak = a->stats.allocated_bytes;
    a->stats.reserved_bytes_peak = a->stats.reserved_bytes;
    a->stats.active_blocks_peak = a->stats.active_blocks;
    a->stats.active_bytes_peak = a->stats.active_bytes;
    a->stats.segments_peak = a->stats.segments;
    a->more.graph_held_bytes_peak = a->more.graph_held_bytes;
    a->more.graph_alloc_bytes_peak = a->more.graph_alloc_bytes;
    mt_spin_unlock(&a->lock);
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_memory_reset_accumulated_stats(int device) {
    MT_API_ENTRY();
    LOOKUP_DEVICE(dev, device);
    mt_allocator *a = dev->alloc;
    mt_spin_lock(&a->lock);
    a->stats.alloc_requests = a->stats.free_requests = 0;
    a->stats.segment_allocs = a->stats.segment_frees = 0;
    a->stats.num_alloc_retries = a->stats.num_ooms = 0;
    mt_spin_unlock(&a->lock);
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_memory_snapshot(int device, mtiart_block_info *blocks,
                                                size_t capacity, size_t *count) {
    MT_API_ENTRY();
    LOOKUP_DEVICE(dev, device);
    if (!count || (capacity && !blocks))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "NULL output with non-zero capacity");
    mt_allocator *a = dev->alloc;
    size_t n = 0;
    mt_spin_lock(&a->lock);
    for (mt_pool *pool = &a->default_pool; pool;
         pool = pool == &a->default_pool ? a->pools : pool->next)
        for (segment *seg = pool->segments; seg; seg = seg->next)
            for (block *b = seg->first; b; b = b->next, n++) {
                if (n >= capacity) continue;
                blocks[n] = (mtiart_block_info){.address = blk_addr(b),
                                                .size = b->size,
                                                .requested_size = b->requested,
                                                .segment_address = seg_addr(seg),
                                                .segment_size = seg->size,
                                                .pool = pool->id,
                                                .stream_id = seg->owner->stream_id,
                                                .state = b->state == BLK_QUARANTINED ||
                                                                 b->state == BLK_CACHED
                                                             ? MTIART_BLOCK_FREE
                                                             : b->state,
                                                .device = device};
            }
    mt_spin_unlock(&a->lock);
    *count = n;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_attach_oom_observer(mtiart_oom_observer fn, void *user_data) {
    MT_API_ENTRY();
    if (!fn) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "observer is NULL");
    pthread_mutex_lock(&observers_lock);
    observer *grown =
        num_observers < 32 ? realloc(observers, (num_observers + 1) * sizeof *grown) : NULL;
    if (!grown) {
        pthread_mutex_unlock(&observers_lock);
        return mt_set_error(MTIART_ERROR_OUT_OF_MEMORY,
                            "too many out-of-memory observers (at most 32)");
    }
    observers = grown;
    observers[num_observers++] = (observer){fn, user_data};
    pthread_mutex_unlock(&observers_lock);
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_detach_oom_observer(mtiart_oom_observer fn, void *user_data) {
    MT_API_ENTRY();
    pthread_mutex_lock(&observers_lock);
    for (size_t i = 0; i < num_observers; i++) {
        if (observers[i].fn == fn && observers[i].user_data == user_data) {
            memmove(&observers[i], &observers[i + 1], (num_observers - i - 1) * sizeof *observers);
            num_observers--;
            pthread_mutex_unlock(&observers_lock);
            return MTIART_SUCCESS;
        }
    }
    pthread_mutex_unlock(&observers_lock);
    return mt_set_error(MTIART_ERROR_INVALID_VALUE, "observer was not attached");
}

/* ------------------------------------------------------------------ pools */

MTIART_API mtiart_status mtiart_pool_handle_create(mtiart_pool_id *pool) {
    MT_API_ENTRY();
    MT_CHECK_NOT_NULL(pool);
    pool->first = 0;
    pool->second = atomic_fetch_add(&next_pool_handle, 1);
    return MTIART_SUCCESS;
}

mtiart_status mt_pool_acquire(mt_device *dev, mtiart_pool_id id, mt_pool **out) {
    if (id.first && id.second)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "invalid pool id (%llu, %llu): one of the two numbers must be 0",
                            (unsigned long long)id.first, (unsigned long long)id.second);
    /* Only ids the runtime issued: one made up could be the id a later capture gets, and
     * two graphs would share a pool without knowing. */
    if (id.first >= atomic_load(&next_graph_pool) || id.second >= atomic_load(&next_pool_handle))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "pool id (%llu, %llu) was never issued: pass (0, 0) for a new "
                            "private pool, a captured graph's pool, or an id from "
                            "mtiart_pool_handle_create",
                            (unsigned long long)id.first, (unsigned long long)id.second);
    mt_allocator *a = dev->alloc;
    if (id.first == 0 && id.second == 0) id.first = atomic_fetch_add(&next_graph_pool, 1);
    mt_spin_lock(&a->lock);
    mt_pool *pool = find_pool(a, id);
    if (!pool) {
        pool = calloc(1, sizeof *pool);
        if (!pool) {
            mt_spin_unlock(&a->lock);
            return mt_oom();
        }
        pool->id = id;
        pool->dev = dev;
        pool->next = a->pools;
        a->pools = pool;
        a->stats.private_pools++;
    }
    pool->use_count++;
    mt_spin_unlock(&a->lock);
    *out = pool;
    return MTIART_SUCCESS;
}

void mt_pool_retain(mt_pool *pool) {
    mt_allocator *a = pool->dev->alloc;
    mt_spin_lock(&a->lock);
    pool->use_count++;
    mt_spin_unlock(&a->lock);
}

void mt_pool_release(mt_pool *pool) {
    mt_allocator *a = pool->dev->alloc;
    mt_spin_lock(&a->lock);
    if (--pool->use_count == 0) {
        bool quiet = device_quiet(pool->dev);
        for (segment *seg = pool->segments, *next; seg; seg = next) {
            next = seg->next;
            if (seg->busy_blocks == 0 && quiet) {
                segment_release(a, seg);
            }
        }
        pool_maybe_delete(a, pool);
    }
    mt_spin_unlock(&a->lock);
}

mtiart_pool_id mt_pool_id_of(const mt_pool *pool) { return pool->id; }

int mt_pool_device(const mt_pool *pool) { return pool->dev->index; }

void mt_alloc_stream_destroyed(mt_device *dev, uint64_t stream_id) {
    mt_allocator *a = dev->alloc;
    mt_spin_lock(&a->lock);
    stream_heap *h = heap_index_find(&a->default_pool, stream_id);
    if (h) {
        h->closed = true;
        cache_drain(a, h);
    }
    mt_spin_unlock(&a->lock);
}

void mt_alloc_end_capture(mt_device *dev, uint64_t capture_id) {
    mt_allocator *a = dev->alloc;
    mt_spin_lock(&a->lock);
    /* The capture no longer holds them back; work its streams had enqueued before the
     * capture (the targets taken at the free) may still be running, so they finish as any
     * pending free does. */
    for (block *b = a->pending; b; b = b->fnext)
        if (b->capture_id == capture_id) b->capture_id = 0;
    for (block *b = a->held; b; b = b->fnext) /* for when the graphs let them go */
        if (b->capture_id == capture_id) b->capture_id = 0;
    process_pending(a);
    mt_spin_unlock(&a->lock);
}

MTIART_API mtiart_status mtiart_pool_get_info(int device, mtiart_pool_id id,
                                              mtiart_pool_info *info) {
    MT_API_ENTRY();
    LOOKUP_DEVICE(dev, device);
    MT_CHECK_NOT_NULL(info);
    mt_allocator *a = dev->alloc;
    memset(info, 0, sizeof *info);
    mt_spin_lock(&a->lock);
    mt_pool *pool = find_pool(a, id);
    if (pool) {
        info->exists = 1;
        info->use_count = pool->use_count;
        info->reserved_bytes = pool->reserved;
        info->allocated_bytes = pool->allocated;
        info->active_blocks = pool->active_blocks;
    }
    mt_spin_unlock(&a->lock);
    return MTIART_SUCCESS;
}

bool mt_pool_segment_of(const mt_pool *pool, const void *ptr, size_t bytes, uintptr_t *base,
                        size_t *size) {
    mt_allocator *a = pool->dev->alloc;
    uintptr_t p = (uintptr_t)ptr;
    if (p - arena_base(a) >= a->arena_size) return false;
    bool found = false;
    mt_spin_lock(&a->lock);
    segment *seg = atomic_load(&a->chunk_segment[(p - arena_base(a)) / GRANULE]);
    if (seg && seg->pool == pool && p - seg_addr(seg) <= seg->size &&
        bytes <= seg->size - (p - seg_addr(seg))) {
        *base = seg_addr(seg);
        *size = seg->size;
        found = true;
    }
    mt_spin_unlock(&a->lock);
    return found;
}
