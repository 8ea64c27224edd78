/*
 * Memory notes: what the program said about its device allocations, for dumps, traces and
 * snapshots. An allocation's name (mtiart_memory_set_name) lives here, keyed by the
 * allocation's start, until the allocation is freed; the allocator tells this file of
 * frees only while some allocation has a note (mt_memory_freed), so programs that name
 * nothing pay one relaxed load per free.
 *
 * Named allocations are few (weights, caches, the buffers a user wants to find in a
 * picture), so they are a plain array searched linearly under one mutex, a leaf lock.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct note {
    uintptr_t start;
    size_t size;
    char *name;
} note;

static pthread_mutex_t notes_lock = PTHREAD_MUTEX_INITIALIZER;
static note *notes;
static size_t num_notes, cap_notes;
atomic_int mt_memory_notes;

/* The note of the allocation starting at `start`, or NULL; notes_lock held. */
static note *note_at(uintptr_t start) {
    for (size_t i = 0; i < num_notes; i++)
        if (notes[i].start == start) return &notes[i];
    return NULL;
}

static void drop_note(note *n) {
    free(n->name);
    *n = notes[--num_notes];
    atomic_store_explicit(&mt_memory_notes, num_notes != 0, memory_order_relaxed);
}

void mt_memory_note_free(const void *ptr) {
    pthread_mutex_lock(&notes_lock);
    note *n = note_at((uintptr_t)ptr);
    if (n) drop_note(n);
    pthread_mutex_unlock(&notes_lock);
}

char *mt_memory_name_of(const void *ptr) {
    if (!atomic_load_explicit(&mt_memory_notes, memory_order_relaxed)) return NULL;
    char *copy = NULL;
    uintptr_t p = (uintptr_t)ptr;
    pthread_mutex_lock(&notes_lock);
    for (size_t i = 0; i < num_notes && !copy; i++)
        if (p - notes[i].start < (notes[i].size ? notes[i].size : 1)) copy = strdup(notes[i].name);
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
    if (n && !copy) {
        drop_note(n);
    } else if (n) {
        free(n->name);
        n->name = copy;
        n->size = size;
    } else if (copy) {
        if (num_notes == cap_notes) {
            size_t cap = cap_notes ? cap_notes * 2 : 16;
            note *grown = realloc(notes, cap * sizeof *grown);
            if (!grown) {
                pthread_mutex_unlock(&notes_lock);
                free(copy);
                return mt_oom();
            }
            notes = grown;
            cap_notes = cap;
        }
        notes[num_notes++] = (note){start, size, copy};
        atomic_store_explicit(&mt_memory_notes, 1, memory_order_relaxed);
    }
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
