/*
 * Memory notes: what is known about device allocations beyond the allocator's own
 * bookkeeping, for dumps, traces and snapshots: an allocation's name
 * (mtiart_memory_set_name) and, while memory history is recorded
 * (mtiart_memory_record_history), the call stack that made it and a log of allocations
 * and frees. A note lives here, keyed by the allocation's start, until the allocation is
 * freed. The allocator tells this file of allocations only while history is recorded
 * and of frees only while some note exists (mt_memory_allocated, mt_memory_freed), so a
 * program that uses neither pays one relaxed load per call.
 *
 * Notes are a hash table by start address under one mutex, a leaf lock (history is a
 * debugging mode: one lock per allocation and free is its price).
 */
#include "internal.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct note {
    uintptr_t start;
    size_t size;
    char *name;    /* NULL: none */
    void **frames; /* the allocating call stack (history), NULL: none */
    uint32_t num_frames;
} note;

static pthread_mutex_t notes_lock = PTHREAD_MUTEX_INITIALIZER;
static note *notes;
static size_t num_notes, cap_notes;
atomic_int mt_memory_notes;

/* Memory history (under notes_lock): the depth of the stacks kept per allocation (0: not
 * recording) and the allocations and frees since it was enabled, oldest first, at most
 * `history_max` of them (0: no limit) in a ring from `ring_head`. */
atomic_int mt_memory_history;
static uint32_t history_frames;
static size_t history_max;
static mtiart_memory_event *ring;
static size_t ring_len, ring_cap, ring_head;

static void update_flag(void) {
    atomic_store_explicit(&mt_memory_notes, num_notes != 0 || atomic_load(&mt_memory_history) != 0,
                          memory_order_relaxed);
}

/* Notes by start address: open addressing, linear probing, deletion by backward shift
 * (no tombstones); start 0 marks an empty slot. notes_lock held for all of these. */
static size_t slot_of(uintptr_t start, size_t cap) {
    return (size_t)((start >> 9) * 0x9E3779B97F4A7C15u) & (cap - 1);
}

/* The note of the allocation starting at `start`, or NULL. */
static note *note_at(uintptr_t start) {
    if (!cap_notes) return NULL;
    for (size_t k = slot_of(start, cap_notes);; k = (k + 1) & (cap_notes - 1)) {
        if (notes[k].start == start) return &notes[k];
        if (!notes[k].start) return NULL;
    }
}

static bool grow_notes(void) {
    size_t cap = cap_notes ? cap_notes * 2 : 64;
    note *table = calloc(cap, sizeof *table);
    if (!table) return false;
    for (size_t i = 0; i < cap_notes; i++) {
        if (!notes[i].start) continue;
        size_t k = slot_of(notes[i].start, cap);
        while (table[k].start) k = (k + 1) & (cap - 1);
        table[k] = notes[i];
    }
    free(notes);
    notes = table;
    cap_notes = cap;
    return true;
}

static note *add_note(uintptr_t start, size_t size) {
    if (2 * (num_notes + 1) > cap_notes && !grow_notes()) return NULL;
    size_t k = slot_of(start, cap_notes);
    while (notes[k].start) k = (k + 1) & (cap_notes - 1);
    notes[k] = (note){start, size, NULL, NULL, 0};
    num_notes++;
    return &notes[k];
}

static void drop_note(note *n) {
    free(n->name);
    free(n->frames);
    size_t hole = (size_t)(n - notes), mask = cap_notes - 1;
    notes[hole].start = 0;
    /* Move up the entries after the hole that their probe would no longer reach. */
    for (size_t k = (hole + 1) & mask; notes[k].start; k = (k + 1) & mask) {
        size_t home = slot_of(notes[k].start, cap_notes);
        if (((k - home) & mask) >= ((k - hole) & mask)) {
            notes[hole] = notes[k];
            notes[k].start = 0;
            hole = k;
        }
    }
    num_notes--;
    update_flag();
}

/* Append an event to the history (a full ring forgets its oldest); notes_lock held. */
static void record_event(int32_t action, int32_t device, uintptr_t address, size_t size,
                         uint64_t stream_id) {
    mtiart_memory_event e = {action, device, address, size, stream_id, mt_now_ns()};
    if (history_max && ring_len == history_max) {
        ring[ring_head] = e;
        ring_head = (ring_head + 1) % history_max;
        return;
    }
    if (ring_len == ring_cap) {
        size_t cap = ring_cap ? ring_cap * 2 : 256;
        if (history_max && cap > history_max) cap = history_max;
        mtiart_memory_event *grown = realloc(ring, cap * sizeof *grown);
        if (!grown) return; /* the history misses an event rather than failing the call */
        ring = grown;
        ring_cap = cap;
    }
    ring[ring_len++] = e;
}

static bool in_runtime(void *frame, const Dl_info *self) {
    Dl_info info;
    return dladdr(frame, &info) && info.dli_fbase == self->dli_fbase;
}

/* How many of the innermost `frames` are not the caller's: the runtime's own (this file,
 * the allocating entry point, a kernel-library operation that allocates scratch) and any
 * before them (a sanitizer's backtrace interceptor). */
static int own_frames(void *const *frames, int count) {
    Dl_info self;
    if (!dladdr((void *)(uintptr_t)mt_memory_note_alloc, &self)) return count > 2 ? 2 : count;
    int k = 0;
    while (k < count && k < 4 && !in_runtime(frames[k], &self)) k++;
    if (k == count || k == 4) return 0; /* not found where expected: keep everything */
    while (k < count && in_runtime(frames[k], &self)) k++;
    return k;
}

void mt_memory_note_alloc(const void *ptr, size_t size, int device, uint64_t stream_id) {
    enum { OWN_MAX = 8 }; /* room for the runtime's own frames, which are dropped */
    void *frames[MTIART_MAX_HISTORY_FRAMES + OWN_MAX];
    uint32_t depth = (uint32_t)atomic_load(&mt_memory_history);
    int got = depth ? backtrace(frames, (int)depth + OWN_MAX) : 0;
    int skip = own_frames(frames, got);
    if (got - skip > (int)depth) got = skip + (int)depth;
    pthread_mutex_lock(&notes_lock);
    if (history_frames) {
        record_event(MTIART_MEMORY_ALLOC, device, (uintptr_t)ptr, size, stream_id);
        note *n = note_at((uintptr_t)ptr);
        if (!n) n = add_note((uintptr_t)ptr, size);
        if (n) {
            free(n->frames);
            n->frames = NULL;
            n->num_frames = 0;
            if (got > skip && (n->frames = malloc((size_t)(got - skip) * sizeof *frames))) {
                memcpy(n->frames, frames + skip, (size_t)(got - skip) * sizeof *frames);
                n->num_frames = (uint32_t)(got - skip);
            }
        }
        update_flag();
    }
    pthread_mutex_unlock(&notes_lock);
}

void mt_memory_note_free(const void *ptr) {
    pthread_mutex_lock(&notes_lock);
    note *n = note_at((uintptr_t)ptr);
    if (history_frames) {
        int device = -1;
        mt_pointer_device_quiet(ptr, &device);
        record_event(MTIART_MEMORY_FREE, device, (uintptr_t)ptr, n ? n->size : 0, 0);
    }
    if (n) drop_note(n);
    pthread_mutex_unlock(&notes_lock);
}

char *mt_memory_name_of(const void *ptr) {
    if (!atomic_load_explicit(&mt_memory_notes, memory_order_relaxed)) return NULL;
    uintptr_t start;
    size_t size;
    if (mt_block_range_quiet(ptr, &start, &size) != MTIART_SUCCESS) return NULL;
    char *copy = NULL;
    pthread_mutex_lock(&notes_lock);
    const note *n = note_at(start);
    if (n && n->name) copy = strdup(n->name);
    pthread_mutex_unlock(&notes_lock);
    return copy;
}

MTIART_API mtiart_status mtiart_memory_set_name(void *ptr, const char *name) {
    MT_API_ENTRY();
    MT_INIT_OR_RETURN();
    uintptr_t start;
    size_t size;
    mtiart_status st = mt_block_range(ptr, &start, &size);
    if (st) return st;
    char *copy = NULL;
    if (name && name[0]) {
        copy = strdup(name);
        MT_CHECK_ALLOC(copy);
    }
    pthread_mutex_lock(&notes_lock);
    note *n = note_at(start);
    if (!n && copy && !(n = add_note(start, size))) {
        pthread_mutex_unlock(&notes_lock);
        free(copy);
        return mt_oom();
    }
    if (n) {
        free(n->name);
        n->name = copy;
        n->size = size;
        if (!n->name && !n->frames) drop_note(n);
    }
    update_flag();
    pthread_mutex_unlock(&notes_lock);
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_memory_get_name(const void *ptr, char *buffer, size_t capacity,
                                                size_t *length) {
    MT_API_ENTRY();
    MT_INIT_OR_RETURN();
    if (capacity && !buffer) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "buffer is NULL");
    uintptr_t start;
    size_t size;
    mtiart_status st = mt_block_range(ptr, &start, &size);
    if (st) return st;
    char *name = mt_memory_name_of((const void *)start);
    size_t len = name ? strlen(name) : 0;
    if (capacity) snprintf(buffer, capacity, "%s", name ? name : "");
    if (length) *length = len;
    free(name);
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_memory_record_history(int enabled, uint32_t max_frames,
                                                      size_t max_entries) {
    MT_API_ENTRY();
    if (enabled && (max_frames == 0 || max_frames > MTIART_MAX_HISTORY_FRAMES))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "max_frames must be 1..%d (got %u)",
                            MTIART_MAX_HISTORY_FRAMES, max_frames);
    pthread_mutex_lock(&notes_lock);
    if (enabled) { /* a new recording starts with an empty log */
        free(ring);
        ring = NULL;
        ring_len = ring_cap = ring_head = 0;
        history_max = max_entries;
    }
    history_frames = enabled ? max_frames : 0;
    atomic_store(&mt_memory_history, (int)history_frames);
    update_flag();
    pthread_mutex_unlock(&notes_lock);
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_memory_get_block_frames(const void *ptr, void **frames,
                                                        size_t capacity, size_t *count) {
    MT_API_ENTRY();
    MT_INIT_OR_RETURN();
    if (!count || (capacity && !frames))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "NULL output with non-zero capacity");
    uintptr_t start;
    size_t size;
    mtiart_status st = mt_block_range(ptr, &start, &size);
    if (st) return st;
    pthread_mutex_lock(&notes_lock);
    const note *n = note_at(start);
    size_t total = n ? n->num_frames : 0;
    for (size_t i = 0; i < total && i < capacity; i++) frames[i] = n->frames[i];
    pthread_mutex_unlock(&notes_lock);
    *count = total;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_memory_get_history(mtiart_memory_event *events, size_t capacity,
                                                   size_t *count) {
    MT_API_ENTRY();
    if (!count || (capacity && !events))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "NULL output with non-zero capacity");
    pthread_mutex_lock(&notes_lock);
    for (size_t i = 0; i < ring_len && i < capacity; i++)
        events[i] = ring[(ring_head + i) % (ring_cap ? ring_cap : 1)];
    *count = ring_len;
    pthread_mutex_unlock(&notes_lock);
    return MTIART_SUCCESS;
}
