/*
 * Stream operations (mt_op): what a stream queue slot holds and what a graph node records.
 * This file packs them, copies and releases them, and runs the ones that do work: a kernel
 * over its blocks, a copy, a fill, a host function. It also keeps what names a kernel in
 * messages and dumps (the name registry, mtiart_kernel_set_name, mtiart_kernel_load) and
 * the one description of a kernel or host function that failed.
 *
 * Layering. A worker's call chain runs one way through the files and never comes back:
 *
 *     device.c   worker threads: take a ready stream, or help a posted job
 *       stream.c   drain a stream in order; event records and waits; graph launches
 *         exec.c     replay an executable graph's plan
 *           op.c       run one operation                      <- this file
 *             sync.c     post a job for the other workers; locks, futexes, clocks
 *
 * (stream.c also calls event.c to complete records and park on waits; event.c goes no
 * further than sync.c. Under valgrind, running an op also tells the allocator which
 * buffers it touches, alloc.c's mt_alloc_vg_enter/leave, which call nothing further.) So this file
 * knows nothing of streams or executables: a failing op returns its code and a description, and the
 * caller (a stream's drain, a replay) records the sticky error. The one call back up is a job's
 * help function, which a worker that helps calls through the job, as a thread pool runs a task.
 */
#include "internal.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------------ packing */

static inline size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

mtiart_status mt_op_pack_kernel(mt_op *op, mtiart_kernel_fn fn, uint32_t num_blocks,
                                const mtiart_arg *args, uint32_t num_args) {
    if (!fn) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "kernel function is NULL");
    if (num_blocks == 0)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "num_blocks must be at least 1");
    if (num_args > MT_MAX_ARGS)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "%u kernel arguments (at most %d)",
                            num_args, MT_MAX_ARGS);
    if (num_args && !args)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "args is NULL but num_args is %u",
                            num_args);
    size_t total = align8(2 + 2 * (size_t)num_args);
    for (uint32_t i = 0; i < num_args; i++) {
        const mtiart_arg *a = &args[i];
        if (a->kind == MTIART_ARG_VALUE) {
            if (a->size == 0 || a->size > 4096 || !a->value)
                return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                                    "argument %u: a value argument needs 1..4096 bytes "
                                    "and a non-NULL value (size %u)",
                                    i, a->size);
            total = align8(total) + a->size;
        } else if (a->kind <= MTIART_ARG_BUFFER_INOUT) {
            total = align8(total) + sizeof(void *);
        } else {
            return mt_set_error(MTIART_ERROR_INVALID_VALUE, "argument %u: unknown kind %u", i,
                                a->kind);
        }
    }
    /* Under valgrind the op lists its buffers after the values, for mt_op_buffers. */
    uint32_t vg_buffers = 0;
    size_t vg_table = 0;
    if (MT_UNLIKELY(mt_under_valgrind)) {
        for (uint32_t i = 0; i < num_args; i++) vg_buffers += args[i].kind != MTIART_ARG_VALUE;
        if (vg_buffers) {
            vg_table = align8(total);
            total = vg_table + 16 * (size_t)vg_buffers;
        }
    }
    uint8_t *blob = op->inline_blob;
    op->u.kernel.heap_blob = NULL;
    op->u.kernel.blob_size = (uint32_t)total;
    op->u.kernel.vg_buffers = (uint16_t)vg_buffers;
    op->u.kernel.vg_table = (uint16_t)(vg_table >> 3);
    op->u.kernel.label = NULL;
    if (total > MT_OP_INLINE_BYTES) {
        blob = malloc(total);
        MT_CHECK_ALLOC(blob);
        op->u.kernel.heap_blob = blob;
    }
    op->type = MT_OP_KERNEL;
    op->num_blocks = num_blocks;
    op->fn.kernel = fn;
    /* The padding is zeroed too: a blob's bytes are a function of the arguments, so two
     * blobs compare with memcmp (mt_op_equal) and never read an undefined byte. */
    memset(blob, 0, total);
    uint16_t count = (uint16_t)num_args;
    memcpy(blob, &count, 2);
    size_t offset = 2 + 2 * (size_t)num_args;
    for (uint32_t i = 0; i < num_args; i++) {
        const mtiart_arg *a = &args[i];
        offset = align8(offset);
        /* Offsets are stored in 8-byte units: values are 8-aligned, and 64 arguments of
         * 4096 bytes reach ~262 KB, past what a uint16 byte offset can hold (arguments
         * beyond 64 KB pointed at the wrong bytes). Units of 8 reach 512 KB. */
        uint16_t off16 = (uint16_t)(offset >> 3);
        memcpy(blob + 2 + 2 * i, &off16, 2);
        if (a->kind == MTIART_ARG_VALUE) {
            memcpy(blob + offset, a->value, a->size);
            offset += a->size;
        } else {
            memcpy(blob + offset, &a->value, sizeof(void *));
            offset += sizeof(void *);
        }
    }
    uint8_t *entry = blob + vg_table; /* {uint32 argument, uint32 kind, uint64 extent} */
    for (uint32_t i = 0; i < num_args && vg_buffers; i++) {
        if (args[i].kind == MTIART_ARG_VALUE) continue;
        memcpy(entry, &i, 4);
        memcpy(entry + 4, &args[i].kind, 4);
        memcpy(entry + 8, &args[i].extent, 8);
        entry += 16;
    }
    return MTIART_SUCCESS;
}

uint32_t mt_blob_argv(uint8_t *blob, void **argv) {
    uint16_t count;
    memcpy(&count, blob, 2);
    for (uint32_t i = 0; i < count; i++) {
        uint16_t off;
        memcpy(&off, blob + 2 + 2 * i, 2);
        argv[i] = blob + ((size_t)off << 3);
    }
    return count;
}

/* In the order of the call's arguments: a copy's destination before its source. */
uint32_t mt_op_buffers(const mt_op *op, const mtiart_arg *args, uint32_t num_args, mt_buffer *out) {
    uint32_t n = 0;
    switch (op->type) {
    case MT_OP_KERNEL:
        for (uint32_t i = 0; i < num_args && args; i++)
            if (args[i].kind != MTIART_ARG_VALUE && args[i].kind <= MTIART_ARG_BUFFER_INOUT)
                out[n++] = (mt_buffer){args[i].value, args[i].extent, args[i].kind, (int32_t)i,
                                       "kernel argument"};
        if (!args) {
            const uint8_t *blob = op->u.kernel.heap_blob ? op->u.kernel.heap_blob : op->inline_blob;
            const uint8_t *entry = blob + ((size_t)op->u.kernel.vg_table << 3);
            for (uint32_t k = 0; k < op->u.kernel.vg_buffers; k++, entry += 16) {
                uint32_t arg, kind;
                uint64_t extent;
                uint16_t offset;
                void *ptr;
                memcpy(&arg, entry, 4);
                memcpy(&kind, entry + 4, 4);
                memcpy(&extent, entry + 8, 8);
                memcpy(&offset, blob + 2 + 2 * arg, 2);
                memcpy(&ptr, blob + ((size_t)offset << 3), sizeof ptr);
                out[n++] = (mt_buffer){ptr, extent, kind, (int32_t)arg, "kernel argument"};
            }
        }
        break;
    case MT_OP_MEMCPY: {
        uint32_t kind = op->u.copy.kind;
        if (kind == MTIART_MEMCPY_HOST_TO_DEVICE || kind == MTIART_MEMCPY_DEVICE_TO_DEVICE)
            out[n++] = (mt_buffer){op->u.copy.dst, op->u.copy.bytes, MTIART_ARG_BUFFER_OUT, -1,
                                   "destination"};
        if (kind == MTIART_MEMCPY_DEVICE_TO_HOST || kind == MTIART_MEMCPY_DEVICE_TO_DEVICE)
            out[n++] =
                (mt_buffer){op->u.copy.src, op->u.copy.bytes, MTIART_ARG_BUFFER_IN, -1, "source"};
        break;
    }
    case MT_OP_FILL:
        out[n++] = (mt_buffer){op->u.fill.dst, (uint64_t)op->u.fill.count * op->u.fill.size,
                               MTIART_ARG_BUFFER_OUT, -1, "destination"};
        break;
    case MT_OP_CONDITIONAL:
        out[n++] = (mt_buffer){op->u.cond.flag, op->u.cond.flag_size, MTIART_ARG_BUFFER_IN, -1,
                               "condition"};
        break;
    default: break;
    }
    return n;
}

static bool is_device_pointer(const void *ptr) {
    int device;
    return mt_pointer_device_quiet(ptr, &device) == MTIART_SUCCESS;
}

mtiart_status mt_op_pack_memcpy(mt_op *op, void *dst, const void *src, size_t bytes,
                                mtiart_memcpy_kind kind) {
    if (kind == MTIART_MEMCPY_DEFAULT) {
        bool d = is_device_pointer(dst), sd = is_device_pointer(src);
        kind = d ? (sd ? MTIART_MEMCPY_DEVICE_TO_DEVICE : MTIART_MEMCPY_HOST_TO_DEVICE)
                 : (sd ? MTIART_MEMCPY_DEVICE_TO_HOST : MTIART_MEMCPY_HOST_TO_HOST);
    }
    if ((unsigned)kind > MTIART_MEMCPY_DEVICE_TO_DEVICE)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "unknown memcpy kind %d", (int)kind);
    if (bytes && !dst) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "destination is NULL");
    if (bytes && !src) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "source is NULL");
    *op = (mt_op){.type = MT_OP_MEMCPY, .num_blocks = 1};
    op->u.copy.dst = dst;
    op->u.copy.src = src;
    op->u.copy.bytes = bytes;
    op->u.copy.kind = (uint32_t)kind;
    return MTIART_SUCCESS;
}

mtiart_status mt_op_pack_fill(mt_op *op, void *dst, const void *pattern, uint32_t pattern_size,
                              size_t count) {
    if (!pattern ||
        (pattern_size != 1 && pattern_size != 2 && pattern_size != 4 && pattern_size != 8))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "the pattern must be non-NULL with size 1, 2, 4 or 8 (got %u)",
                            pattern_size);
    if (count > SIZE_MAX / pattern_size)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "count * pattern_size overflows");
    if (count && !dst) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "destination is NULL");
    *op = (mt_op){.type = MT_OP_FILL, .num_blocks = 1};
    op->u.fill.dst = dst;
    op->u.fill.count = count;
    op->u.fill.size = pattern_size;
    op->u.fill.pattern = 0;
    memcpy(&op->u.fill.pattern, pattern, pattern_size);
    return MTIART_SUCCESS;
}

mtiart_status mt_op_pack_conditional(mt_op *op, mt_device *dev, const char *owner,
                                     mtiart_conditional_type type, const void *flag,
                                     uint32_t flag_size) {
    if ((unsigned)type > MTIART_CONDITIONAL_WHILE)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "unknown conditional type %d", (int)type);
    if (flag_size != 1 && flag_size != 2 && flag_size != 4 && flag_size != 8)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "the condition must be 1, 2, 4 or 8 bytes (got %u)", flag_size);
    if (!flag) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "condition is NULL");
    if ((uintptr_t)flag % flag_size)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "the condition %p is not aligned to its %u bytes", flag, flag_size);
    *op = (mt_op){.type = MT_OP_CONDITIONAL, .num_blocks = 1};
    op->u.cond.flag = flag;
    op->u.cond.flag_size = flag_size;
    op->u.cond.kind = (uint32_t)type;
    /* Checked here already (a capture reports a bad flag where its body begins). */
    mt_buffer flag_buffer;
    mt_op_buffers(op, NULL, 0, &flag_buffer);
    return mt_check_buffers(dev, &flag_buffer, 1, owner, NULL, 0);
}

/* ------------------------------------------------------------------ ownership */

/* GRAPH ops never get here: they exist only in stream queues, which release them. */
void mt_op_release(mt_op *op) {
    switch (op->type) {
    case MT_OP_KERNEL:
        /* No write to the slot when there is nothing to free: the consumer keeps its
         * hands off lines the producer may be about to reuse. */
        if (op->u.kernel.heap_blob) {
            free(op->u.kernel.heap_blob);
            op->u.kernel.heap_blob = NULL;
        }
        break;
    case MT_OP_EVENT_RECORD:
    case MT_OP_EVENT_WAIT:
        if (op->u.event.event) mt_event_unref(op->u.event.event);
        op->u.event.event = NULL;
        break;
    case MT_OP_MEM_ALLOC:
    case MT_OP_MEM_FREE:
        if (op->u.mem.alloc) mt_graph_alloc_unref(op->u.mem.alloc);
        op->u.mem.alloc = NULL;
        break;
    default: break;
    }
}

mtiart_status mt_op_clone(mt_op *dst, const mt_op *src) {
    *dst = *src;
    switch (src->type) {
    case MT_OP_KERNEL:
        if (src->u.kernel.heap_blob) {
            dst->u.kernel.heap_blob = malloc(src->u.kernel.blob_size);
            if (!dst->u.kernel.heap_blob) {
                dst->type = MT_OP_EMPTY; /* owns nothing: safe to release */
                return mt_oom();
            }
            memcpy(dst->u.kernel.heap_blob, src->u.kernel.heap_blob, src->u.kernel.blob_size);
        }
        break;
    case MT_OP_EVENT_RECORD:
    case MT_OP_EVENT_WAIT:
        if (src->u.event.event) mt_event_ref(src->u.event.event);
        break;
    case MT_OP_MEM_ALLOC:
    case MT_OP_MEM_FREE:
        if (src->u.mem.alloc) mt_graph_alloc_ref(src->u.mem.alloc);
        break;
    default: break;
    }
    return MTIART_SUCCESS;
}

/* Blobs compare byte for byte: packing zeroes their padding. Words first: a blob is a few
 * dozen bytes, where a call of memcmp costs more than the comparison. */
static bool same_bytes(const uint8_t *a, const uint8_t *b, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y) return false;
    }
    for (; i < n; i++)
        if (a[i] != b[i]) return false;
    return true;
}

bool mt_op_equal(mt_op *a, mt_op *b) {
    if (a->type != b->type || a->num_blocks != b->num_blocks) return false;
    switch (a->type) {
    case MT_OP_KERNEL:
        return a->fn.kernel == b->fn.kernel && a->u.kernel.blob_size == b->u.kernel.blob_size &&
               same_bytes(mt_op_blob(a), mt_op_blob(b), a->u.kernel.blob_size);
    case MT_OP_MEMCPY:
        return a->u.copy.dst == b->u.copy.dst && a->u.copy.src == b->u.copy.src &&
               a->u.copy.bytes == b->u.copy.bytes && a->u.copy.kind == b->u.copy.kind;
    case MT_OP_FILL:
        return a->u.fill.dst == b->u.fill.dst && a->u.fill.pattern == b->u.fill.pattern &&
               a->u.fill.count == b->u.fill.count && a->u.fill.size == b->u.fill.size;
    case MT_OP_HOST: return a->fn.host == b->fn.host && a->u.host.user_data == b->u.host.user_data;
    case MT_OP_EVENT_RECORD:
    case MT_OP_EVENT_WAIT: return a->u.event.event == b->u.event.event;
    case MT_OP_CONDITIONAL:
        return a->u.cond.flag == b->u.cond.flag && a->u.cond.flag_size == b->u.cond.flag_size &&
               a->u.cond.kind == b->u.cond.kind;
    case MT_OP_MEM_ALLOC:
    case MT_OP_MEM_FREE: return a->u.mem.alloc == b->u.mem.alloc;
    default: return true;
    }
}

/* ------------------------------------------------------------------ failures */

static _Thread_local char tl_kernel_message[512];
static _Thread_local bool tl_kernel_message_set;

MTIART_API void mtiart_kernel_set_error_message(const char *message) {
    snprintf(tl_kernel_message, sizeof tl_kernel_message, "%s", message ? message : "");
    tl_kernel_message_set = true;
}

/* The message the calling worker's kernel or host function set, once (NULL if none). */
static const char *take_kernel_message(void) {
    if (!tl_kernel_message_set) return NULL;
    tl_kernel_message_set = false;
    return tl_kernel_message;
}

void mt_describe_failure(mtiart_kernel_fn fn, int32_t code, const char *message, char *out,
                         size_t cap) {
    if (!message) message = take_kernel_message();
    const char *sep = message && message[0] ? ": " : "";
    if (!message) message = "";
    if (!fn) {
        snprintf(out, cap, "host function failed (code %d)%s%s", code, sep, message);
        return;
    }
    char name[96];
    mt_kernel_name(fn, name, sizeof name);
    snprintf(out, cap, "kernel %s failed (code %d)%s%s", name, code, sep, message);
}

/* ------------------------------------------------------------------ running */

typedef struct kernel_job {
    mt_job base;
    mtiart_kernel_fn fn;
    void **argv;
    uint32_t num_blocks;
    atomic_uint next_block;
    atomic_int hosts; /* waiting hosts running its blocks (kernel_job_help_host) */
    atomic_int failed;
    int32_t code;
    char message[sizeof tl_kernel_message];
} kernel_job;

static void run_block(kernel_job *job, uint32_t block) {
    int32_t rc = job->fn(job->argv, block, job->num_blocks);
    if (MT_UNLIKELY(rc != 0)) {
        const char *message = take_kernel_message();
        int expected = 0;
        if (atomic_compare_exchange_strong(&job->failed, &expected, 1)) {
            job->code = rc;
            snprintf(job->message, sizeof job->message, "%s", message ? message : "");
        }
    }
}

/* The owner: every block left. */
static void kernel_job_run(kernel_job *job) {
    uint32_t block;
    while ((block = atomic_fetch_add_explicit(&job->next_block, 1, memory_order_relaxed)) <
           job->num_blocks)
        run_block(job, block);
}

/* A worker that came to help: blocks until none is left, or a waiting host runs them in its
 * place. That worker was woken for the job (a sleeping one, the host's reason to help) and
 * arrived late: a third thread on two CPUs would make the kernel end with the later of the
 * two that share one. */
static void kernel_job_help(mt_job *base) {
    kernel_job *job = (kernel_job *)base;
    for (;;) {
        if (atomic_load_explicit(&job->hosts, memory_order_relaxed)) return;
        uint32_t block = atomic_fetch_add_explicit(&job->next_block, 1, memory_order_relaxed);
        if (block >= job->num_blocks) return;
        run_block(job, block);
    }
}

/* A block at a time, each taken only while a CPU is idle (a worker sleeps: otherwise the
 * waiting thread would share a CPU with one that runs another block, and the kernel would
 * end when the later of the two does) and the deadline is ahead. */
static bool kernel_job_help_host(mt_job *base, mt_device *dev, uint64_t deadline, bool *ran) {
    kernel_job *job = (kernel_job *)base;
    atomic_fetch_add(&job->hosts, 1);
    bool exhausted = false;
    for (;;) {
        if (atomic_load_explicit(&job->next_block, memory_order_relaxed) >= job->num_blocks) {
            exhausted = true;
            break;
        }
        if (atomic_load_explicit(&dev->sleepers, memory_order_relaxed) == 0 ||
            (deadline != MT_FOREVER && mt_now_ns() >= deadline))
            break;
        uint32_t block = atomic_fetch_add_explicit(&job->next_block, 1, memory_order_relaxed);
        if (block >= job->num_blocks) {
            exhausted = true;
            break;
        }
        run_block(job, block);
        *ran = true;
    }
    atomic_fetch_sub(&job->hosts, 1);
    return exhausted;
}

/* A kernel over its blocks, spread over the device's workers when there are several. */
static int32_t run_kernel(mt_device *dev, mtiart_kernel_fn fn, void **argv, uint32_t num_blocks,
                          char *failure, size_t cap) {
    if (num_blocks == 1) {
        int32_t rc = fn(argv, 0, 1);
        if (MT_UNLIKELY(rc != 0)) mt_describe_failure(fn, rc, NULL, failure, cap);
        return rc;
    }
    /* The runtime's own kernels only: a program's kernel runs on the device's workers, as
     * documented (it may keep thread-local state, or block the thread it runs on). */
    bool builtin = dev->num_workers > 1 && mt_builtin_kernel_name(fn) != NULL;
    kernel_job job = {
        .base = {.help = kernel_job_help, .help_host = builtin ? kernel_job_help_host : NULL},
        .fn = fn,
        .argv = argv,
        .num_blocks = num_blocks};
    mt_job_slot *slot = mt_job_post(dev, &job.base);
    kernel_job_run(&job);
    mt_job_retire(dev, slot);
    if (MT_UNLIKELY(atomic_load(&job.failed))) {
        mt_describe_failure(fn, job.code, job.message, failure, cap);
        return job.code;
    }
    return 0;
}

static void fill_pattern(void *dst, uint64_t pattern, uint32_t size, size_t count) {
    switch (size) {
    case 1: memset(dst, (int)(pattern & 0xff), count); break;
    case 2: {
        uint16_t v = (uint16_t)pattern, *p = dst;
        for (size_t i = 0; i < count; i++) p[i] = v;
        break;
    }
    case 4: {
        uint32_t v = (uint32_t)pattern, *p = dst;
        for (size_t i = 0; i < count; i++) p[i] = v;
        break;
    }
    default: {
        uint64_t *p = dst;
        for (size_t i = 0; i < count; i++) p[i] = pattern;
        break;
    }
    }
}

static int32_t run(mt_device *dev, mt_op *op, void **argv, char *failure, size_t cap) {
    switch (op->type) {
    case MT_OP_KERNEL: {
        void *unpacked[MT_MAX_ARGS];
        if (!argv) {
            mt_blob_argv(mt_op_blob(op), unpacked);
            argv = unpacked;
        }
        return run_kernel(dev, op->fn.kernel, argv, op->num_blocks, failure, cap);
    }
    /* Graph nodes of 0 bytes (elements) may name no memory at all. */
    case MT_OP_MEMCPY:
        if (op->u.copy.bytes) memmove(op->u.copy.dst, op->u.copy.src, op->u.copy.bytes);
        return 0;
    case MT_OP_FILL:
        if (op->u.fill.count)
            fill_pattern(op->u.fill.dst, op->u.fill.pattern, op->u.fill.size, op->u.fill.count);
        return 0;
    case MT_OP_HOST: {
        int32_t rc = op->fn.host(op->u.host.user_data);
        if (MT_UNLIKELY(rc != 0)) mt_describe_failure(NULL, rc, NULL, failure, cap);
        return rc;
    }
    default: /* event records and waits, empty nodes: they only order other work */ return 0;
    }
}

int32_t mt_op_run(mt_device *dev, mt_op *op, void **argv, char *failure, size_t cap) {
    if (MT_LIKELY(!mt_under_valgrind)) return run(dev, op, argv, failure, cap);
    /* Memcheck sees the op touch what it described, also memory freed since it was
     * enqueued; the host's accesses to that memory stay errors. */
    mt_buffer bufs[MT_MAX_ARGS];
    uint32_t n = mt_op_buffers(op, NULL, 0, bufs);
    mt_alloc_vg_enter(dev, bufs, n);
    int32_t rc = run(dev, op, argv, failure, cap);
    mt_alloc_vg_leave(dev, bufs, n);
    return rc;
}

/* ------------------------------------------------------------------ kernel names */

/* Names the program gave (they win), then the built-in kernels' own, then the dynamic
 * symbol. */
typedef struct kernel_name {
    mtiart_kernel_fn fn;
    char *name;
} kernel_name;

static pthread_mutex_t names_lock = PTHREAD_MUTEX_INITIALIZER;
static kernel_name *names;
static size_t num_names, cap_names;

MTIART_API mtiart_status mtiart_kernel_set_name(mtiart_kernel_fn kernel, const char *name) {
    MT_API_ENTRY();
    if (!kernel || !name) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "NULL argument");
    char *copy = strdup(name);
    MT_CHECK_ALLOC(copy);
    pthread_mutex_lock(&names_lock);
    for (size_t i = 0; i < num_names; i++) {
        if (names[i].fn == kernel) {
            free(names[i].name);
            names[i].name = copy;
            pthread_mutex_unlock(&names_lock);
            return MTIART_SUCCESS;
        }
    }
    if (num_names == cap_names) {
        size_t cap = cap_names ? cap_names * 2 : 16;
        kernel_name *grown = realloc(names, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&names_lock);
            free(copy);
            return mt_oom();
        }
        names = grown;
        cap_names = cap;
    }
    names[num_names++] = (kernel_name){kernel, copy};
    pthread_mutex_unlock(&names_lock);
    return MTIART_SUCCESS;
}

void mt_kernel_name(mtiart_kernel_fn fn, char *out, size_t cap) {
    pthread_mutex_lock(&names_lock);
    for (size_t i = 0; i < num_names; i++) {
        if (names[i].fn == fn) {
            snprintf(out, cap, "%s", names[i].name);
            pthread_mutex_unlock(&names_lock);
            return;
        }
    }
    pthread_mutex_unlock(&names_lock);
    const char *builtin = mt_builtin_kernel_name(fn);
    if (builtin) {
        snprintf(out, cap, "%s", builtin);
        return;
    }
    Dl_info info;
    /* dladdr finds exported symbols only; static kernels fall back to their address. */
    union {
        mtiart_kernel_fn fn;
        void *p;
    } cast = {.fn = fn};
    if (dladdr(cast.p, &info) && info.dli_sname && info.dli_saddr == cast.p)
        snprintf(out, cap, "%s", info.dli_sname);
    else snprintf(out, cap, "kernel@%p", cast.p);
}

/* Interned launch labels: a hash set of strings never freed (reachable from `labels`). */
static pthread_mutex_t labels_lock = PTHREAD_MUTEX_INITIALIZER;
static char **labels;
static size_t num_labels, cap_labels;

static size_t label_hash(const char *s, size_t cap) {
    uint64_t h = 1469598103934665603u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211u;
    return (size_t)h & (cap - 1);
}

const char *mt_intern_label(const char *label) {
    pthread_mutex_lock(&labels_lock);
    if (2 * (num_labels + 1) > cap_labels) {
        size_t cap = cap_labels ? cap_labels * 2 : 64;
        char **grown = calloc(cap, sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&labels_lock);
            return NULL;
        }
        for (size_t i = 0; i < cap_labels; i++) {
            if (!labels[i]) continue;
            size_t k = label_hash(labels[i], cap);
            while (grown[k]) k = (k + 1) & (cap - 1);
            grown[k] = labels[i];
        }
        free(labels);
        labels = grown;
        cap_labels = cap;
    }
    size_t k = label_hash(label, cap_labels);
    while (labels[k] && strcmp(labels[k], label) != 0) k = (k + 1) & (cap_labels - 1);
    if (!labels[k] && (labels[k] = strdup(label))) num_labels++;
    const char *interned = labels[k];
    pthread_mutex_unlock(&labels_lock);
    return interned;
}

void mt_kernel_describe(mtiart_kernel_fn fn, const uint8_t *blob, char *out, size_t cap) {
    void *argv[MT_MAX_ARGS];
    uint32_t nargs = mt_blob_argv((uint8_t *)blob, argv);
    if (mt_builtin_kernel_describe(fn, argv, nargs, out, cap) < 0) mt_kernel_name(fn, out, cap);
}

MTIART_API mtiart_status mtiart_kernel_load(const char *library_path, const char *symbol,
                                            mtiart_kernel_fn *kernel) {
    MT_API_ENTRY();
    if (!library_path || !symbol || !kernel)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "NULL argument");
    void *lib = dlopen(library_path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        return mt_set_error(MTIART_ERROR_LOAD_FAILED, "cannot load '%s': %s", library_path,
                            why ? why : "unknown error");
    }
    dlerror();
    void *sym = dlsym(lib, symbol);
    const char *why = dlerror();
    if (!sym || why) {
        /* The message first: dlclose frees the string dlerror returned. */
        mtiart_status st =
            mt_set_error(MTIART_ERROR_LOAD_FAILED, "symbol '%s' not found in '%s'%s%s", symbol,
                         library_path, why ? ": " : "", why ? why : "");
        /* Dropping our reference keeps the process clean when the lookup fails. */
        dlclose(lib);
        return st;
    }
    union {
        void *p;
        mtiart_kernel_fn fn;
    } cast = {.p = sym};
    *kernel = cast.fn;
    mtiart_kernel_set_name(cast.fn, symbol);
    return MTIART_SUCCESS;
}
