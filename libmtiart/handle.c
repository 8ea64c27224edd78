/*
 * Handle table. A handle encodes (generation, slot index, kind), so a destroyed handle
 * (generation moved on) or a handle of another kind is detected without touching freed
 * memory. Slots live in chunks that are never freed or moved, so lookups take no lock.
 */
#include "internal.h"

#include <stdlib.h>

#define KIND_BITS 4
#define INDEX_BITS 24
#define CHUNK_SLOTS 4096
#define NUM_CHUNKS ((1u << INDEX_BITS) / CHUNK_SLOTS)

typedef struct slot {
    atomic_uint_least64_t generation; /* odd while live */
    _Atomic(void *) object;
    uint32_t next_free;
} slot;

static _Atomic(slot *) chunks[NUM_CHUNKS];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t free_head = UINT32_MAX;
static uint32_t next_unused = 1; /* index 0 is never used */

static slot *slot_at(uint32_t index) {
    slot *chunk = atomic_load_explicit(&chunks[index / CHUNK_SLOTS], memory_order_acquire);
    return chunk ? &chunk[index % CHUNK_SLOTS] : NULL;
}

uint64_t mt_handle_register(void *object, unsigned kind) {
    pthread_mutex_lock(&table_lock);
    uint32_t index;
    if (free_head != UINT32_MAX) {
        index = free_head;
        free_head = slot_at(index)->next_free;
    } else {
        if (next_unused >= (1u << INDEX_BITS)) {
            pthread_mutex_unlock(&table_lock);
            return 0;
        }
        index = next_unused++;
        if (!atomic_load_explicit(&chunks[index / CHUNK_SLOTS], memory_order_relaxed)) {
            slot *chunk = calloc(CHUNK_SLOTS, sizeof *chunk);
            if (!chunk) {
                next_unused--;
                pthread_mutex_unlock(&table_lock);
                return 0;
            }
            atomic_store_explicit(&chunks[index / CHUNK_SLOTS], chunk, memory_order_release);
        }
    }
    slot *s = slot_at(index);
    atomic_store_explicit(&s->object, object, memory_order_relaxed);
    uint64_t generation = atomic_load_explicit(&s->generation, memory_order_relaxed) + 1;
    atomic_store_explicit(&s->generation, generation, memory_order_release);
    pthread_mutex_unlock(&table_lock);
    return (generation << (KIND_BITS + INDEX_BITS)) | ((uint64_t)index << KIND_BITS) | kind;
}

static slot *decode(uint64_t handle, unsigned kind, uint64_t *generation) {
    if ((handle & ((1u << KIND_BITS) - 1)) != kind) return NULL;
    uint32_t index = (uint32_t)((handle >> KIND_BITS) & ((1u << INDEX_BITS) - 1));
    if (index == 0) return NULL;
    *generation = handle >> (KIND_BITS + INDEX_BITS);
    if ((*generation & 1) == 0) return NULL;
    return slot_at(index);
}

void *mt_handle_lookup(uint64_t handle, unsigned kind) {
    uint64_t generation;
    slot *s = decode(handle, kind, &generation);
    if (!s) return NULL;
    if (atomic_load_explicit(&s->generation, memory_order_acquire) != generation) return NULL;
    return atomic_load_explicit(&s->object, memory_order_acquire);
}

void *mt_handle_unregister(uint64_t handle, unsigned kind) {
    uint64_t generation;
    slot *s = decode(handle, kind, &generation);
    if (!s) return NULL;
    pthread_mutex_lock(&table_lock);
    void *object = NULL;
    if (atomic_load_explicit(&s->generation, memory_order_relaxed) == generation) {
        object = atomic_load_explicit(&s->object, memory_order_relaxed);
        atomic_store_explicit(&s->object, NULL, memory_order_relaxed);
        atomic_store_explicit(&s->generation, generation + 1, memory_order_release);
        s->next_free = (uint32_t)((handle >> KIND_BITS) & ((1u << INDEX_BITS) - 1));
        uint32_t index = s->next_free;
        s->next_free = free_head;
        free_head = index;
    }
    pthread_mutex_unlock(&table_lock);
    return object;
}
