/*
 * Handle table, and the one lifetime rule for handles.
 *
 * A handle encodes (generation, slot index, kind), so a destroyed handle (generation moved
 * on) or a handle of another kind is detected without touching freed memory. Slots live in
 * chunks that are never freed or moved, so lookups take no lock.
 *
 * The rule: every public call that looks a handle up holds ("pins") it until it returns,
 * so a call racing a destroy of the same handle either completes as if it came first or
 * returns MTIART_ERROR_INVALID_HANDLE; it never uses freed memory.
 *
 *   - Each slot has one atomic word: (generation, kind, pins), pins being the number of
 *     calls inside the object right now. The generation is odd while the handle is live.
 *   - A lookup pins with one compare-and-swap that succeeds only while generation and kind
 *     are the handle's; unpinning is one atomic decrement (mt_handle_unpin, run on every
 *     return path by the cleanup attribute the LOOKUP_* macros put on the pin).
 *   - Destroying advances the generation (even: new lookups fail at once) and never waits
 *     for the calls inside: the last one out (the decrement that leaves no pin on an even
 *     generation) drops the table's reference to the object and recycles the slot. Since
 *     a destroy is itself a pinned call, that is at the latest the destroy returning.
 *
 * Objects that work in flight uses (queued ops, graph nodes, captures) keep their own
 * reference counts; the table's reference is one of them.
 */
#include "internal.h"

#include <stdlib.h>

#define NUM_CHUNKS ((1u << MT_HANDLE_INDEX_BITS) / MT_HANDLE_CHUNK_SLOTS)

_Atomic(mt_handle_slot *) mt_handle_chunks[NUM_CHUNKS];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t free_head = UINT32_MAX;
static uint32_t next_unused = 1; /* index 0 is never used */

static mt_handle_slot *slot_at(uint32_t index) {
    mt_handle_slot *chunk = atomic_load_explicit(&mt_handle_chunks[index / MT_HANDLE_CHUNK_SLOTS],
                                                 memory_order_acquire);
    return chunk ? &chunk[index % MT_HANDLE_CHUNK_SLOTS] : NULL;
}

/* A free slot index (table_lock held), or UINT32_MAX when the table is full. */
static uint32_t take_index(void) {
    if (free_head != UINT32_MAX) {
        uint32_t index = free_head;
        free_head = slot_at(index)->next_free;
        return index;
    }
    if (next_unused >= (1u << MT_HANDLE_INDEX_BITS)) return UINT32_MAX;
    uint32_t index = next_unused;
    _Atomic(mt_handle_slot *) *chunk = &mt_handle_chunks[index / MT_HANDLE_CHUNK_SLOTS];
    if (!atomic_load_explicit(chunk, memory_order_relaxed)) {
        mt_handle_slot *slots = calloc(MT_HANDLE_CHUNK_SLOTS, sizeof *slots);
        if (!slots) return UINT32_MAX;
        atomic_store_explicit(chunk, slots, memory_order_release);
    }
    next_unused++;
    return index;
}

mtiart_status mt_handle_register(void *object, unsigned kind, void (*release)(void *),
                                 uint64_t *handle) {
    pthread_mutex_lock(&table_lock);
    uint32_t index = take_index();
    if (index == UINT32_MAX) {
        pthread_mutex_unlock(&table_lock);
        release(object);
        return mt_set_error(MTIART_ERROR_OUT_OF_MEMORY, "too many live handles");
    }
    mt_handle_slot *s = slot_at(index);
    s->object = object;
    s->release = release;
    s->index = index;
    uint64_t generation =
        (atomic_load_explicit(&s->state, memory_order_relaxed) >> MT_HANDLE_GEN_SHIFT) +
        1; /* odd: live; no pins can be left */
    atomic_store_explicit(&s->state,
                          generation << MT_HANDLE_GEN_SHIFT | (uint64_t)kind << MT_PIN_BITS,
                          memory_order_release);
    pthread_mutex_unlock(&table_lock);
    *handle = generation << MT_HANDLE_GEN_SHIFT | (uint64_t)index << MT_HANDLE_KIND_BITS | kind;
    return MTIART_SUCCESS;
}

bool mt_handle_retire(mt_pin *pin) {
    mt_handle_slot *s = pin->slot;
    uint64_t state = atomic_load_explicit(&s->state, memory_order_relaxed);
    while ((state >> MT_HANDLE_GEN_SHIFT) & 1) {
        if (atomic_compare_exchange_weak_explicit(&s->state, &state,
                                                  state + (UINT64_C(1) << MT_HANDLE_GEN_SHIFT),
                                                  memory_order_acq_rel, memory_order_relaxed))
            return true; /* our own pin keeps it: the release is at the latest our return */
    }
    return false; /* another destroy came first */
}

void mt_handle_last_out(mt_handle_slot *s) {
    /* Every call that left before did so with an acq_rel decrement of the same word, so
     * all they did with the object happens before its release here. */
    void *object = s->object;
    void (*release)(void *) = s->release;
    s->object = NULL;
    pthread_mutex_lock(&table_lock);
    s->next_free = free_head;
    free_head = s->index;
    pthread_mutex_unlock(&table_lock);
    release(object);
}
