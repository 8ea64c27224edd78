/*
 * _memcheck_preload.c - loaded with LD_PRELOAD into the interpreter that
 * `python -m mtia_graph.memcheck` runs under valgrind. Outside valgrind it does nothing:
 * the wrappers below are only symbols with names that valgrind's core recognises.
 *
 * 1. Allocation sites. Valgrind wraps libmtiart's allocation entry points with the
 *    functions below; after a successful allocation they call a hook that
 *    mtia_graph.memcheck installs (a ctypes callback), which walks the calling thread's
 *    Python frames and stores the site with mtia_memcheck_note(). Wrapping the C entry
 *    points catches every allocation made from Python, whatever Python code made it.
 * 2. The exit report. mtia_memcheck_arm() sets up an atexit handler that runs after
 *    the interpreter has finalised: it lists the device blocks that are still allocated
 *    (through mtiart_memory_snapshot, passed in as a pointer so that this library needs
 *    no libmtiart at load time) with their recorded Python sites, for the launcher to
 *    print beside valgrind's verdict.
 * 3. CPython 3.11's _PyLong_New leaves ob_digit[0] of a zero-valued int uninitialised and
 *    the int fast paths multiply it by zero; memcheck cannot see that the product is
 *    defined and reports every later use of the resulting pointer (CPython issue
 *    gh-119022, fixed in 3.12 by initialising the digit). The wrapper initialises the
 *    digit as 3.12 does, for 3.11 only, so that real uninitialised reads stay reported.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <valgrind/valgrind.h>

#include "mtiart.h"

/* ------------------------------------------------------------------ allocation sites */

typedef void (*site_hook_fn)(uint64_t address, uint64_t size);

static site_hook_fn site_hook;

/* Open addressing keyed by block address; an address that is reused gets its newest site. */
typedef struct site {
    uint64_t address; /* 0: empty */
    char *text;
} site;

static pthread_mutex_t sites_lock = PTHREAD_MUTEX_INITIALIZER;
static site *sites;
static size_t sites_cap, sites_used;

static size_t site_slot(const site *table, size_t cap, uint64_t address) {
    size_t i = (size_t)((address >> 4) * 0x9E3779B97F4A7C15ull) & (cap - 1);
    while (table[i].address != 0 && table[i].address != address) i = (i + 1) & (cap - 1);
    return i;
}

static int sites_grow(void) {
    size_t cap = sites_cap ? sites_cap * 2 : 4096;
    site *table = calloc(cap, sizeof *table);
    if (!table) return -1;
    for (size_t i = 0; i < sites_cap; i++)
        if (sites[i].address) table[site_slot(table, cap, sites[i].address)] = sites[i];
    free(sites);
    sites = table;
    sites_cap = cap;
    return 0;
}

/* Install the hook called after each successful allocation (NULL removes it). */
void mtia_memcheck_set_site_hook(site_hook_fn hook) { site_hook = hook; }

/* Remember the Python site of the block at `address` (the text is copied). */
int mtia_memcheck_note(uint64_t address, const char *text) {
    if (!address || !text) return -1;
    char *copy = strdup(text);
    if (!copy) return -1;
    pthread_mutex_lock(&sites_lock);
    int rc = 0;
    if ((sites_used + 1) * 2 > sites_cap && sites_grow() != 0) {
        rc = -1;
        free(copy);
    } else {
        site *s = &sites[site_slot(sites, sites_cap, address)];
        if (s->address) {
            free(s->text);
        } else {
            s->address = address;
            sites_used++;
        }
        s->text = copy;
    }
    pthread_mutex_unlock(&sites_lock);
    return rc;
}

static const char *site_text(uint64_t address) {
    if (!sites_cap) return NULL;
    const site *s = &sites[site_slot(sites, sites_cap, address)];
    return s->address ? s->text : NULL;
}

static void register_report(void);

static void allocated(mtiart_status status, void *const *ptr, size_t size) {
    if (status != MTIART_SUCCESS || !ptr || !*ptr) return;
    register_report();
    site_hook_fn hook = site_hook;
    if (hook) hook((uint64_t)(uintptr_t)*ptr, size);
}

/* libmtiart's soname, Z-encoded as valgrind's wrapping macros want it. */
#define LIBMTIART_SONAME libmtiartZdsoZd0

mtiart_status I_WRAP_SONAME_FNNAME_ZU(LIBMTIART_SONAME, mtiart_malloc_async)(
    mtiart_stream stream, size_t size, void **ptr);
mtiart_status I_WRAP_SONAME_FNNAME_ZU(LIBMTIART_SONAME, mtiart_malloc_async)(
    mtiart_stream stream, size_t size, void **ptr) {
    OrigFn fn;
    long status;
    VALGRIND_GET_ORIG_FN(fn);
    CALL_FN_W_WWW(status, fn, stream, size, ptr);
    allocated((mtiart_status)status, ptr, size);
    return (mtiart_status)status;
}

mtiart_status I_WRAP_SONAME_FNNAME_ZU(LIBMTIART_SONAME, mtiart_malloc)(int device, size_t size,
                                                                       void **ptr);
mtiart_status I_WRAP_SONAME_FNNAME_ZU(LIBMTIART_SONAME, mtiart_malloc)(int device, size_t size,
                                                                       void **ptr) {
    OrigFn fn;
    long status;
    VALGRIND_GET_ORIG_FN(fn);
    CALL_FN_W_WWW(status, fn, (long)device, size, ptr);
    allocated((mtiart_status)status, ptr, size);
    return (mtiart_status)status;
}

/* ------------------------------------------------------------------ exit report */

typedef mtiart_status (*device_count_fn)(int *count);
typedef mtiart_status (*snapshot_fn)(int device, mtiart_block_info *blocks, size_t capacity,
                                     size_t *count);

static char *report_path;
static device_count_fn device_count;
static snapshot_fn snapshot;

/* One "block ADDRESS SIZE DEVICE POOL_FIRST POOL_SECOND" line per device block still
 * allocated, each followed by its site lines and "end". */
static void write_report(void) {
    FILE *out = fopen(report_path, "w");
    if (!out) return;
    int devices = 0;
    if (device_count(&devices) != MTIART_SUCCESS) devices = 0;
    for (int d = 0; d < devices; d++) {
        size_t count = 0;
        if (snapshot(d, NULL, 0, &count) != MTIART_SUCCESS || count == 0) continue;
        mtiart_block_info *blocks = calloc(count, sizeof *blocks);
        if (!blocks) break;
        size_t got = 0;
        if (snapshot(d, blocks, count, &got) == MTIART_SUCCESS) {
            if (got > count) got = count;
            for (size_t i = 0; i < got; i++) {
                const mtiart_block_info *b = &blocks[i];
                if (b->state != MTIART_BLOCK_ACTIVE) continue;
                fprintf(out, "block %llx %llu %d %llu %llu\n", (unsigned long long)b->address,
                        (unsigned long long)b->requested_size, (int)b->device,
                        (unsigned long long)b->pool.first,
                        (unsigned long long)b->pool.second);
                const char *text = site_text(b->address);
                if (text) fputs(text, out);
                fputs("end\n", out);
            }
        }
        free(blocks);
    }
    fclose(out);
}

static pthread_once_t report_once = PTHREAD_ONCE_INIT;

static void register_report_once(void) {
    if (report_path) (void)atexit(write_report);
}

/* At the first allocation, which comes after the runtime's initialisation registered its
 * own shutdown: atexit handlers run in reverse order, so the report comes first. (Arming
 * cannot initialise the runtime itself: the program may still configure it.) */
static void register_report(void) { pthread_once(&report_once, register_report_once); }

/* Write the exit report to `path` if the program allocates any device memory. */
int mtia_memcheck_arm(const char *path, device_count_fn count_fn, snapshot_fn snap_fn) {
    if (!path || !count_fn || !snap_fn || report_path) return -1;
    device_count = count_fn;
    snapshot = snap_fn;
    report_path = strdup(path);
    return report_path ? 0 : -1;
}

/* ------------------------------------------------------------------ CPython 3.11 ints */

/* Py_Version exists from 3.11 on; weak, so older interpreters leave it NULL. */
extern const unsigned long Py_Version __attribute__((weak));

/* The layout of an int object in 3.11: ob_refcnt, ob_type, ob_size, ob_digit[]. */
typedef struct long_object_311 {
    intptr_t refcnt;
    void *type;
    intptr_t size;
    uint32_t digit[1];
} long_object_311;

static int cpython_311(void) { return &Py_Version != NULL && (Py_Version >> 16) == 0x030B; }

/* In 3.11 _PyLong_New(n) always allocates at least one digit. */
#define PYLONG_NEW_WRAPPER(soname)                                                         \
    void *I_WRAP_SONAME_FNNAME_ZU(soname, _PyLong_New)(intptr_t size);                     \
    void *I_WRAP_SONAME_FNNAME_ZU(soname, _PyLong_New)(intptr_t size) {                    \
        OrigFn fn;                                                                         \
        void *result;                                                                      \
        VALGRIND_GET_ORIG_FN(fn);                                                          \
        CALL_FN_W_W(result, fn, size);                                                     \
        if (result && cpython_311()) ((long_object_311 *)result)->digit[0] = 0;            \
        return result;                                                                     \
    }

PYLONG_NEW_WRAPPER(libpythonZa) /* interpreters linked to libpython3.11.so */
PYLONG_NEW_WRAPPER(NONE)        /* interpreters with libpython linked in statically */
