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
    BLK_FREE = MTIART_BLOCK_FREE
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
} block;

/* Valgrind: a freed range its stream's earlier work may still touch (see vg_block_freed). */
typedef struct vg_zombie {
    uintptr_t addr_hidden;
    size_t size;
    mt_stream *stream;
    uint64_t target; /* the range is dead once the stream has completed this much */
} vg_zombie;

typedef struct heap {
    uint64_t bitmap[BITMAP_WORDS];
    block *bins[NUM_BINS];
} heap;

struct stream_heap {
    uint64_t stream_id;
    size_t num_segments; /* segments it owns; a heap without any is dropped on release */
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
    uint64_t free_clock; /* counts frees: orders them against waits for the device */
    mtiart_memory_stats stats;
    vg_zombie *zombies; /* valgrind only */
    size_t num_zombies, cap_zombies;
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
 *   - cached free memory and released segments are NOACCESS (under valgrind a released
 *     segment stays mapped, so a stray access is reported rather than a crash);
 *   - frees are stream ordered: a block is FREELIKE at mtiart_free (free stack = caller),
 *     but while its stream (or a record_stream user) still has work enqueued before the
 *     free, the range stays addressable and defined (a "zombie"), so kernels still reading
 *     it are not reported; once the stream is past that point (checked at host waits, at
 *     allocations and frees, and at exit) what is still free becomes NOACCESS. Reuse on
 *     the same stream is immediate, exactly as without valgrind (a block handed out over
 *     a zombie starts defined, for the same reason);
 *   - a block freed into a private pool that graphs still use (freed during capture, or a
 *     graph output freed later) is FREELIKE but stays addressable (undefined): replays
 *     still read and write it. It becomes NOACCESS when the pool's last graph is gone.
 */
#ifdef MTIART_HAVE_VALGRIND
#define VG_ON() RUNNING_ON_VALGRIND
#define VG_ALLOC(b, defined)                                                                       \
    VALGRIND_MALLOCLIKE_BLOCK((void *)blk_addr(b), (b)->requested ? (b)->requested : 1, 0,         \
                              (defined))
#define VG_FREE(b) VALGRIND_FREELIKE_BLOCK((void *)blk_addr(b), 0)
#define VG_NOACCESS(p, n) VALGRIND_MAKE_MEM_NOACCESS((void *)(p), (n))
#define VG_UNDEFINED(p, n) VALGRIND_MAKE_MEM_UNDEFINED((void *)(p), (n))
#define VG_DEFINED(p, n) VALGRIND_MAKE_MEM_DEFINED((void *)(p), (n))
#else
#define VG_ON() 0
#define VG_ALLOC(b, defined) ((void)(b), (void)(defined))
#define VG_FREE(b) ((void)(b))
#define VG_NOACCESS(p, n) ((void)(p), (void)(n))
#define VG_UNDEFINED(p, n) ((void)(p), (void)(n))
#define VG_DEFINED(p, n) ((void)(p), (void)(n))
#endif

/* Replays of the pool's graphs may still touch its free blocks. */
static inline bool pool_graph_held(const mt_allocator *a, const mt_pool *pool) {
    return pool != &a->default_pool && pool->use_count > 0;
}

static bool vg_zombie_add(mt_allocator *a, block *b);

/* The program freed the block (lock held). Memcheck sees the free at once (its free stack
 * is the caller's), but a range that work enqueued earlier on the block's stream may still
 * read stays addressable (as defined data) until that stream is past it (vg_zombies_poll);
 * the allocator itself reuses the block in stream order exactly as without valgrind. */
static void vg_block_settle(mt_allocator *a, block *b) {
    if (pool_graph_held(a, b->seg->pool)) VG_UNDEFINED(blk_addr(b), b->size);
    else if (vg_zombie_add(a, b)) VG_DEFINED(blk_addr(b), b->size);
    else VG_NOACCESS(blk_addr(b), b->size);
}

static void vg_block_freed(mt_allocator *a, block *b) {
    if (!VG_ON()) return;
    VG_FREE(b);
    vg_block_settle(a, b);
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

static stream_heap *heap_for(mt_pool *pool, uint64_t stream_id) {
    stream_heap *h = pool->last_heap;
    if (h && h->stream_id == stream_id) return h;
    h = heap_index_find(pool, stream_id);
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

/* Drop the heaps that own no segment (streams that are gone, or whose memory was all
 * released): without this every stream that ever allocated kept ~11 KB for good. A live
 * stream simply gets a fresh heap on its next allocation. Lock held. */
static void drop_empty_heaps(mt_pool *pool) {
    for (stream_heap *h = pool->heaps, *next; h; h = next) {
        next = h->next;
        if (h->num_segments) continue;
        if (h->prev) h->prev->next = h->next;
        else pool->heaps = h->next;
        if (h->next) h->next->prev = h->prev;
        heap_index_erase(pool, h);
        if (pool->last_heap == h) pool->last_heap = NULL;
        free(h);
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
            mt_stream_wait_idle(busy[i], false, MT_FOREVER);
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

/* ------------------------------------------------------------------ blocks */

static void release_block(mt_allocator *a, block *b) {
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
    if (VG_ON()) vg_block_settle(a, b); /* FREELIKE already at mtiart_free */
    release_block(a, b);
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

/* Wait until work that could still touch memory freed so far is done (what cudaFree's
 * synchronization gives): read the free clock, then wait for every stream busy at that
 * point. Any such work was enqueued before its block's free, so segments last freed at or
 * before the returned clock value can be unmapped. From a worker, which cannot wait, that
 * holds only if the device is already quiet. Allocator lock not held. */
static uint64_t settle_frees(mt_device *dev) {
    mt_allocator *a = dev->alloc;
    mt_spin_lock(&a->lock);
    if (a->pending) process_pending(a); /* frees that are due count before the clock */
    uint64_t horizon = a->free_clock;
    mt_spin_unlock(&a->lock);
    if (mt_on_worker()) return device_quiet(dev) ? horizon : 0;
    wait_device_streams(dev);
    return horizon;
}

/* Valgrind only: remember a freed block whose stream still has work enqueued before the
 * free; returns whether it did (lock held). */
static bool vg_zombie_add(mt_allocator *a, block *b) {
    mt_stream *owner = stream_ref_by_id(b->seg->pool->dev, b->seg->owner->stream_id);
    if (!owner) return false;
    uint64_t target = atomic_load(&owner->enqueued);
    if (atomic_load(&owner->completed) >= target) {
        mt_stream_unref(owner);
        return false;
    }
    if (a->num_zombies == a->cap_zombies) {
        size_t cap = a->cap_zombies ? a->cap_zombies * 2 : 16;
        vg_zombie *grown = realloc(a->zombies, cap * sizeof *grown);
        if (!grown) { /* those reads get reported rather than the free failing */
            mt_stream_unref(owner);
            return false;
        }
        a->zombies = grown;
        a->cap_zombies = cap;
    }
    a->zombies[a->num_zombies++] = (vg_zombie){hide_addr(blk_addr(b)), b->size, owner, target};
    return true;
}

/* Whether [addr, addr+size) overlaps a range earlier work may still read. */
static bool vg_zombie_overlaps(const mt_allocator *a, uintptr_t addr, size_t size) {
    for (size_t i = 0; i < a->num_zombies; i++) {
        uintptr_t z = ~a->zombies[i].addr_hidden;
        if (addr < z + a->zombies[i].size && z < addr + size) return true;
    }
    return false;
}

/* Ranges whose stream is past the free: what of them is still free becomes NOACCESS (what
 * was handed out again is a live block by now). Lock held. */
static void vg_zombies_poll(mt_allocator *a) {
    for (size_t i = 0; i < a->num_zombies;) {
        vg_zombie *z = &a->zombies[i];
        if (atomic_load(&z->stream->completed) < z->target) {
            i++;
            continue;
        }
        vg_zombie done = *z;
        *z = a->zombies[--a->num_zombies];
        uintptr_t addr = ~done.addr_hidden, end = addr + done.size;
        segment *seg = atomic_load(&a->chunk_segment[(addr - arena_base(a)) / GRANULE]);
        if (seg && !pool_graph_held(a, seg->pool)) {
            for (block *b = seg->first; b; b = b->next) {
                uintptr_t lo = blk_addr(b), hi = lo + b->size;
                if (b->state != BLK_FREE || hi <= addr || lo >= end) continue;
                if (lo < addr) lo = addr;
                if (hi > end) hi = end;
                /* a later free of the same memory may still wait for its stream */
                if (!vg_zombie_overlaps(a, lo, hi - lo)) VG_NOACCESS(lo, hi - lo);
            }
        }
        mt_stream_unref(done.stream);
    }
}

/* Valgrind only: settle the freed ranges whose streams are done, so that a read after a
 * synchronize is reported (called after host waits, and at exit). */
void mt_alloc_vg_poll(mt_device *dev) {
    if (!VG_ON() || !dev->alloc) return;
    mt_allocator *a = dev->alloc;
    mt_spin_lock(&a->lock);
    if (a->pending) process_pending(a);
    if (a->num_zombies) vg_zombies_poll(a);
    mt_spin_unlock(&a->lock);
}

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
    b->state = BLK_ACTIVE;
    b->requested = requested;
    b->seg->busy_blocks++;
    pool->allocated += b->size;
    pool->active_blocks++;
    a->stats.allocated_bytes += b->size;
    update_peak(&a->stats.allocated_bytes_peak, a->stats.allocated_bytes);
    a->stats.requested_bytes += requested;
    a->stats.active_blocks++;
    update_peak(&a->stats.active_blocks_peak, a->stats.active_blocks);
    a->stats.active_bytes += b->size;
    update_peak(&a->stats.active_bytes_peak, a->stats.active_bytes);
    /* Reused while earlier work on the stream may still read the old contents: those
     * stay defined, so that work's reads are not taken for uninitialised ones. */
    VG_ALLOC(b, VG_ON() && a->num_zombies && vg_zombie_overlaps(a, blk_addr(b), b->size));
    return b;
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
    if (VG_ON() && a->num_zombies) vg_zombies_poll(a);
    stream_heap *sh = heap_for(pool, s->id);
    if (!sh) {
        mt_spin_unlock(&a->lock);
        return mt_oom();
    }
    block *b = take_block(a, pool, sh, rounded, size);
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

/* The live block containing [p, p+bytes), or NULL. Lock held. */
static block *find_block(mt_allocator *a, uintptr_t p, size_t bytes) {
    block **slot = table_slot(a, p);
    block *b = slot ? *slot : NULL;
    if (!b) {
        segment *seg = atomic_load(&a->chunk_segment[(p - arena_base(a)) / GRANULE]);
        if (!seg) return NULL;
        for (b = seg->first; b && !(p - blk_addr(b) < b->size); b = b->next) {}
        if (!b) return NULL;
    }
    if (b->state != BLK_ACTIVE) return NULL;
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
    block *b = find_block(a, (uintptr_t)ptr, bytes ? bytes : 1);
    mt_spin_unlock(&a->lock);
    if (!b)
        return mt_set_error(MTIART_ERROR_INVALID_POINTER,
                            "[%p, +%zu bytes) is not inside a live device allocation "
                            "(freed, out of bounds, or never allocated)",
                            ptr, bytes);
    return MTIART_SUCCESS;
}

/* "what index", or "what" alone (index < 0): the buffer's name in an error message. */
static const char *buffer_label(char *out, size_t cap, const char *what, int index) {
    if (index >= 0) snprintf(out, cap, "%s %d", what, index);
    else snprintf(out, cap, "%s", what);
    return out;
}

mtiart_status mt_check_buffer(const void *ptr, size_t bytes, int device, const char *owner,
                              const char *what, int index) {
    int found;
    char label[64];
    if (MT_UNLIKELY(mt_check_range(ptr, bytes, &found) != MTIART_SUCCESS))
        return mt_error_context("%s", buffer_label(label, sizeof label, what, index));
    if (MT_LIKELY(found == device)) return MTIART_SUCCESS;
    return mt_set_error(MTIART_ERROR_INVALID_POINTER,
                        "%s points into device %d but the %s belongs to device %d",
                        buffer_label(label, sizeof label, what, index), found, owner, device);
}

/* ------------------------------------------------------------------ public API */

MTIART_API mtiart_status mtiart_malloc_async(mtiart_stream stream, size_t size, void **ptr) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    MT_CHECK_NOT_NULL(ptr);
    mt_pool *pool = mt_capture_pool_retain(s);
    mtiart_status st = mt_alloc(s->dev, s, pool, size, ptr);
    if (pool) mt_pool_release(pool);
    return st;
}

MTIART_API mtiart_status mtiart_malloc(int device, size_t size, void **ptr) {
    MT_API_ENTRY();
    LOOKUP_DEVICE(dev, device);
    MT_CHECK_NOT_NULL(ptr);
    mt_pool *pool = mt_capture_pool_retain(dev->default_stream);
    mtiart_status st = mt_alloc(dev, dev->default_stream, pool, size, ptr);
    if (pool) mt_pool_release(pool);
    return st;
}

MTIART_API mtiart_status mtiart_free(void *ptr) {
    MT_API_ENTRY();
    if (!ptr) return MTIART_SUCCESS;
    mt_allocator *a = mt_initialized ? allocator_of(ptr, NULL) : NULL;
    if (!a) return mt_set_error(MTIART_ERROR_INVALID_POINTER, "%p is not device memory", ptr);
    mt_spin_lock(&a->lock);
    block **slot = table_slot(a, (uintptr_t)ptr);
    if (!slot || (*slot)->state != BLK_ACTIVE) {
        mt_spin_unlock(&a->lock);
        return mt_set_error(MTIART_ERROR_INVALID_POINTER,
                            "%p is not the start of a live device allocation "
                            "(double free, or an interior pointer)",
                            ptr);
    }
    block *b = *slot;
    a->stats.free_requests++;
    a->stats.allocated_bytes -= b->size;
    a->stats.requested_bytes -= b->requested;
    mt_pool *pool = b->seg->pool;
    pool->allocated -= b->size;
    /* Other streams use the block: it waits until their work so far is done. Work that a
     * capture records does not run until replay, so such frees wait for the capture's
     * end, when the pool's ordering takes over (as in PyTorch). */
    for (uint32_t i = 0; i < b->num_uses; i++) {
        mt_stream *u = b->uses[i].stream;
        b->uses[i].target = atomic_load(&u->enqueued);
        uint64_t capture_id = atomic_load(&u->capture_id);
        if (capture_id) b->capture_id = capture_id;
    }
    if (VG_ON() && a->num_zombies) vg_zombies_poll(a);
    if (b->num_uses == 0) {
        table_erase(a, slot);
        a->stats.active_blocks--;
        a->stats.active_bytes -= b->size;
        pool->active_blocks--;
        vg_block_freed(a, b);
        release_block(a, b);
        mt_spin_unlock(&a->lock);
        return MTIART_SUCCESS;
    }
    if (VG_ON()) { /* freed for memcheck now; readable until the other streams are done */
        VG_FREE(b);
        if (pool_graph_held(a, pool)) VG_UNDEFINED(blk_addr(b), b->size);
        else VG_DEFINED(blk_addr(b), b->size);
    }
    b->state = BLK_PENDING;
    b->fprev = NULL;
    b->fnext = a->pending;
    if (a->pending) a->pending->fprev = b;
    a->pending = b;
    mt_spin_unlock(&a->lock);
    return MTIART_SUCCESS;
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
    block *b = find_block(a, (uintptr_t)ptr, 1);
    if (!b) {
        mt_spin_unlock(&a->lock);
        return mt_set_error(MTIART_ERROR_INVALID_POINTER, "%p is not a live device allocation",
                            ptr);
    }
    if (b->seg->owner->stream_id != s->id) {
        bool known = false;
        for (uint32_t i = 0; i < b->num_uses; i++) known |= b->uses[i].stream == s;
        if (!known) {
            if (b->num_uses == b->cap_uses) {
                uint32_t cap = b->cap_uses ? b->cap_uses * 2 : 2;
                stream_use *grown = realloc(b->uses, cap * sizeof *grown);
                if (!grown) {
                    mt_spin_unlock(&a->lock);
                    return mt_oom();
                }
                b->uses = grown;
                b->cap_uses = cap;
            }
            mt_stream_ref(s);
            b->uses[b->num_uses++] = (stream_use){s, 0};
        }
    }
    mt_spin_unlock(&a->lock);
    return MTIART_SUCCESS;
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

MTIART_API mtiart_status mtiart_memory_get_stats(int device, mtiart_memory_stats *stats) {
    MT_API_ENTRY();
    LOOKUP_DEVICE(dev, device);
    MT_CHECK_NOT_NULL(stats);
    mt_allocator *a = dev->alloc;
    mt_spin_lock(&a->lock);
    *stats = a->stats;
    stats->inactive_split_blocks = stats->inactive_split_bytes = 0;
    for (mt_pool *pool = &a->default_pool; pool;
         pool = pool == &a->default_pool ? a->pools : pool->next)
        for (segment *seg = pool->segments; seg; seg = seg->next)
            if (seg->busy_blocks)
                for (block *b = seg->first; b; b = b->next)
                    if (b->state == BLK_FREE) {
                        stats->inactive_split_blocks++;
                        stats->inactive_split_bytes += b->size;
                    }
    mt_spin_unlock(&a->lock);
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
                                                .state = b->state,
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
            } else if (VG_ON()) {
                /* No replay can touch the free blocks any more. */
                for (block *b = seg->first; b; b = b->next)
                    if (b->state == BLK_FREE) VG_NOACCESS(blk_addr(b), b->size);
            }
        }
        pool_maybe_delete(a, pool);
    }
    mt_spin_unlock(&a->lock);
}

mtiart_pool_id mt_pool_id_of(const mt_pool *pool) { return pool->id; }

int mt_pool_device(const mt_pool *pool) { return pool->dev->index; }

void mt_alloc_end_capture(mt_device *dev, uint64_t capture_id) {
    mt_allocator *a = dev->alloc;
    mt_spin_lock(&a->lock);
    /* The capture no longer holds them back; work its streams had enqueued before the
     * capture (the targets taken at the free) may still be running, so they finish as any
     * pending free does. */
    for (block *b = a->pending; b; b = b->fnext)
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
