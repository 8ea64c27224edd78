/*
 * The timeline trace: every stream operation a worker runs and, inside graph replays,
 * every node, with its start and end, stream, worker, graph and replay; written as Chrome
 * trace-event JSON (chrome://tracing, Perfetto) with flow arrows from event records to the
 * waits they release and along the edges of a replay that cross streams.
 *
 * Cost. Off, the runtime pays one relaxed load and a predictable branch per drained op
 * and per replay (mt_trace_on). On, a worker appends a fixed-size record to a buffer of
 * its own (no lock, no shared cache line: the one atomic is the buffer's published count,
 * which only its owner writes), and a replay's chain reads the clock once per node (a
 * node ends when the next starts). Names, descriptions and flows are worked out when the
 * trace is written, from what the records point at: kernel functions, the argument blob
 * of an eager kernel (copied when it is inline), the graph nodes of the executables the
 * trace holds (each executable a replay ran is kept alive until the trace is stopped).
 *
 * Sessions. mtiart_trace_start begins session N: a worker's buffer restarts at its first
 * record of a new session, so nothing is cleared across threads. Readers (flush, stop)
 * read a buffer's records up to its published count, under trace_lock, which start and
 * stop also take; chunks are never freed while the runtime lives, only reused.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define CHUNK_EVENTS 512

enum { EV_REPLAY_NODE = 1 };

typedef struct trace_event {
    uint64_t start, end; /* mt_trace_clock */
    uint64_t stream_id;
    uint64_t replay;     /* the graph launch's generation (replay nodes, graph ops) */
    const void *what;    /* kernel or host function; event ops: the event; replay: the node */
    const void *plan;    /* replay nodes: the plan the node is in */
    const void *exec;    /* replay nodes and graph ops: the executable */
    uint64_t generation; /* event ops: the record's generation */
    uint64_t bytes;
    uint32_t type; /* mt_op_type */
    uint32_t pos;  /* replay nodes: position in the plan */
    uint16_t device, flags;
    uint32_t blob_size; /* bytes of `blob` holding an eager kernel's arguments (0: none) */
    const char *label;  /* an eager kernel's launch label (interned), or NULL */
    uint8_t blob[MT_OP_INLINE_BYTES] __attribute__((aligned(8)));
} trace_event;

typedef struct trace_chunk {
    trace_event events[CHUNK_EVENTS];
    _Atomic(struct trace_chunk *) next;
} trace_chunk;

typedef struct trace_buffer {
    uint64_t session; /* owner only */
    trace_chunk *first, *tail;
    uint32_t tail_used;
    atomic_uint_least64_t published; /* records of `session` readers may read */
    atomic_uint_least64_t published_session;
    uint32_t tid;
    struct trace_buffer *next;
} trace_buffer;

atomic_int mt_tracing;
static atomic_uint_least64_t session; /* of the running (or last) trace */
/* The clock at the start, for converting mt_trace_clock to nanoseconds when writing. */
static uint64_t start_clock, start_ns;
static double ns_per_tick = 1.0;
static pthread_mutex_t trace_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t buffers_lock = PTHREAD_MUTEX_INITIALIZER; /* leaf */
static trace_buffer *buffers;
static uint32_t num_buffers;
static _Thread_local trace_buffer *tl_buffer;
/* the executables replayed during the trace, each with a reference (a replay adds to it) */
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER; /* leaf */
static mt_exec **held;
static size_t num_held, cap_held;

/* ------------------------------------------------------------------ recording */

/* An empty chunk (aligned_alloc takes whole multiples of the alignment), or NULL. */
static trace_chunk *new_chunk(void) {
    trace_chunk *c =
        aligned_alloc(MT_CACHELINE, (sizeof *c + MT_CACHELINE - 1) / MT_CACHELINE * MT_CACHELINE);
    if (c) atomic_init(&c->next, NULL);
    return c;
}

static trace_buffer *own_buffer(void) {
    trace_buffer *b = tl_buffer;
    if (MT_UNLIKELY(!b)) {
        b = calloc(1, sizeof *b);
        trace_chunk *c = b ? new_chunk() : NULL;
        if (!c) {
            free(b);
            return NULL; /* this thread records nothing; the trace says so by omission */
        }
        b->first = b->tail = c;
        pthread_mutex_lock(&buffers_lock);
        b->tid = ++num_buffers;
        b->next = buffers;
        buffers = b;
        pthread_mutex_unlock(&buffers_lock);
        tl_buffer = b;
    }
    return b;
}

/* The next free record of the calling thread's buffer, or NULL (out of memory). */
static trace_event *next_event(trace_buffer **out) {
    trace_buffer *b = own_buffer();
    if (MT_UNLIKELY(!b)) return NULL;
    uint64_t now = atomic_load_explicit(&session, memory_order_relaxed);
    if (MT_UNLIKELY(b->session != now)) {
        b->session = now;
        b->tail = b->first;
        b->tail_used = 0;
        atomic_store_explicit(&b->published, 0, memory_order_relaxed);
        atomic_store_explicit(&b->published_session, now, memory_order_release);
    }
    if (MT_UNLIKELY(b->tail_used == CHUNK_EVENTS)) {
        trace_chunk *next = atomic_load_explicit(&b->tail->next, memory_order_relaxed);
        if (!next) {
            next = new_chunk();
            if (!next) return NULL;
            atomic_store_explicit(&b->tail->next, next, memory_order_release);
        }
        b->tail = next;
        b->tail_used = 0;
    }
    *out = b;
    return &b->tail->events[b->tail_used];
}

static inline void publish(trace_buffer *b) {
    b->tail_used++;
    atomic_store_explicit(&b->published,
                          atomic_load_explicit(&b->published, memory_order_relaxed) + 1,
                          memory_order_release);
}

void mt_trace_op(int device, uint64_t stream_id, const mt_op *op, uint64_t start) {
    uint64_t end = mt_trace_clock();
    trace_buffer *b;
    trace_event *e = next_event(&b);
    if (!e) return;
    e->start = start;
    e->end = end;
    e->stream_id = stream_id;
    e->device = (uint16_t)device;
    e->flags = 0;
    e->type = op->type;
    e->label = NULL;
    e->plan = e->exec = NULL;
    e->replay = e->generation = e->bytes = 0;
    e->blob_size = 0;
    switch (op->type) {
    case MT_OP_KERNEL:
        e->what = (const void *)(uintptr_t)op->fn.kernel;
        e->label = op->u.kernel.label;
        if (!op->u.kernel.heap_blob) {
            memcpy(e->blob, op->inline_blob, MT_OP_INLINE_BYTES);
            e->blob_size = op->u.kernel.blob_size;
        }
        break;
    case MT_OP_HOST: e->what = (const void *)(uintptr_t)op->fn.host; break;
    case MT_OP_MEMCPY:
        e->what = NULL;
        e->bytes = op->u.copy.bytes;
        e->generation = op->u.copy.kind;
        break;
    case MT_OP_FILL:
        e->what = NULL;
        e->bytes = (uint64_t)op->u.fill.count * op->u.fill.size;
        break;
    case MT_OP_EVENT_RECORD:
    case MT_OP_EVENT_WAIT:
        e->what = op->u.event.event;
        e->generation = op->u.event.generation;
        break;
    case MT_OP_GRAPH:
        e->what = NULL;
        e->exec = op->u.graph.exec;
        e->replay = op->u.graph.generation;
        break;
    default: e->what = NULL; break;
    }
    publish(b);
}

void mt_trace_node(const mt_trace_node_rec *r, uint64_t start, uint64_t end) {
    trace_buffer *b;
    trace_event *e = next_event(&b);
    if (!e) return;
    e->start = start;
    e->end = end;
    e->stream_id = r->stream_id;
    e->replay = r->replay;
    e->what = r->node;
    e->plan = r->plan;
    e->exec = r->exec;
    e->generation = r->generation;
    e->bytes = 0;
    e->type = r->type;
    e->pos = r->pos;
    e->device = (uint16_t)r->device;
    e->flags = EV_REPLAY_NODE;
    e->blob_size = 0;
    if (r->type == MT_OP_EVENT_RECORD || r->type == MT_OP_EVENT_WAIT) e->what = r->event;
    else e->what = r->node;
    publish(b);
}

bool mt_trace_hold(mt_exec *x, atomic_uint_least64_t *held_session) {
    uint64_t now = atomic_load_explicit(&session, memory_order_relaxed);
    if (atomic_load_explicit(held_session, memory_order_relaxed) == now) return true;
    pthread_mutex_lock(&held_lock);
    bool ok = true;
    if (atomic_load_explicit(held_session, memory_order_relaxed) != now) {
        if (num_held == cap_held) {
            size_t cap = cap_held ? cap_held * 2 : 16;
            mt_exec **grown = realloc(held, cap * sizeof *grown);
            if (grown) {
                held = grown;
                cap_held = cap;
            }
        }
        if (num_held < cap_held) {
            mt_exec_ref(x);
            held[num_held++] = x;
            atomic_store_explicit(held_session, now, memory_order_relaxed);
        } else {
            ok = false; /* its nodes go unrecorded rather than point at freed memory */
        }
    }
    pthread_mutex_unlock(&held_lock);
    return ok;
}

static void release_held(void) {
    pthread_mutex_lock(&held_lock);
    mt_exec **list = held;
    size_t n = num_held;
    held = NULL;
    num_held = cap_held = 0;
    pthread_mutex_unlock(&held_lock);
    for (size_t i = 0; i < n; i++) mt_exec_unref(list[i]);
    free(list);
}

/* ------------------------------------------------------------------ writing */

typedef struct ref {
    const trace_event *e;
    uint32_t tid;
} ref;

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

/* A clock reading as nanoseconds since the trace started, and as CLOCK_MONOTONIC. */
static double since_start_ns(uint64_t t) {
    return t >= start_clock ? (double)(t - start_clock) * ns_per_tick : 0.0;
}
static double us(uint64_t t) { return since_start_ns(t) / 1000.0; }
static unsigned long long monotonic_ns(uint64_t t) {
    return (unsigned long long)(start_ns + (uint64_t)(since_start_ns(t) + 0.5));
}

/* The clock's rate, measured over the trace so far (at least 20 ms of it: waited for when
 * the trace is younger, so that short traces are converted as precisely as long ones). */
static void calibrate(void) {
#if defined(__x86_64__)
    uint64_t ns, ticks;
    while ((ns = mt_now_ns()) < start_ns + 20000000) mt_cpu_relax();
    ticks = mt_trace_clock();
    ns_per_tick =
        ticks > start_clock ? (double)(ns - start_ns) / (double)(ticks - start_clock) : 1.0;
#endif
}

/* What the record ran, for its slice's name. */
static void event_name(const trace_event *e, char *out, size_t cap) {
    static const char *copy_kinds[] = {"HtoH", "HtoD", "DtoH", "DtoD"};
    if (e->flags & EV_REPLAY_NODE) {
        if (e->type == MT_OP_EVENT_RECORD) snprintf(out, cap, "event record");
        else if (e->type == MT_OP_EVENT_WAIT) snprintf(out, cap, "event wait");
        else mt_node_describe(e->what, out, cap);
        return;
    }
    switch (e->type) {
    case MT_OP_KERNEL: {
        mtiart_kernel_fn fn = (mtiart_kernel_fn)(uintptr_t)e->what;
        if (e->label) snprintf(out, cap, "%s", e->label);
        else if (e->blob_size) mt_kernel_describe(fn, e->blob, out, cap);
        else mt_kernel_name(fn, out, cap);
        break;
    }
    case MT_OP_MEMCPY: snprintf(out, cap, "memcpy %s", copy_kinds[e->generation & 3]); break;
    case MT_OP_FILL: snprintf(out, cap, "fill"); break;
    case MT_OP_HOST: snprintf(out, cap, "host function"); break;
    case MT_OP_EVENT_RECORD: snprintf(out, cap, "event record"); break;
    case MT_OP_EVENT_WAIT: snprintf(out, cap, "event wait"); break;
    case MT_OP_GRAPH: snprintf(out, cap, "graph replay"); break;
    default: snprintf(out, cap, "op"); break;
    }
}

static const char *category(uint32_t type) {
    switch (type) {
    case MT_OP_KERNEL: return "kernel";
    case MT_OP_MEMCPY: return "memcpy";
    case MT_OP_FILL: return "fill";
    case MT_OP_HOST: return "host";
    case MT_OP_EVENT_RECORD:
    case MT_OP_EVENT_WAIT: return "event";
    case MT_OP_GRAPH: return "graph";
    case MT_OP_CONDITIONAL: return "conditional";
    default: return "op";
    }
}

/* The executable's number in this trace (1-based; 0 if not held). */
static size_t graph_number(const void *exec) {
    for (size_t i = 0; i < num_held; i++)
        if (held[i] == exec) return i + 1;
    return 0;
}

static void write_slice(FILE *f, const ref *r, bool *first) {
    const trace_event *e = r->e;
    char name[192];
    event_name(e, name, sizeof name);
    uint64_t stream = e->stream_id, bytes = e->bytes;
    int node = -1;
    if (e->flags & EV_REPLAY_NODE) {
        const mt_node *n = e->type == MT_OP_EVENT_RECORD || e->type == MT_OP_EVENT_WAIT
                               ? NULL
                               : (const mt_node *)e->what;
        if (n) {
            if (n->stream_id) stream = n->stream_id;
            for (uint32_t b = 0; b < n->num_buffers; b++) bytes += n->buffers[b].bytes;
        }
        node = (int)e->pos;
    }
    fprintf(f, "%s\n{\"ph\":\"X\",\"name\":", *first ? "" : ",");
    *first = false;
    json_string(f, name);
    fprintf(f,
            ",\"cat\":\"%s\",\"pid\":%u,\"tid\":%u,\"ts\":%.3f,\"dur\":%.3f,"
            "\"args\":{\"stream\":%llu,\"start_ns\":%llu,\"end_ns\":%llu",
            category(e->type), e->device, r->tid, us(e->start),
            (double)(e->end - e->start) * ns_per_tick / 1000.0, (unsigned long long)stream,
            monotonic_ns(e->start), monotonic_ns(e->end));
    if (bytes) fprintf(f, ",\"bytes\":%llu", (unsigned long long)bytes);
    if (e->exec)
        fprintf(f, ",\"graph\":%zu,\"replay\":%llu", graph_number(e->exec),
                (unsigned long long)e->replay);
    if (node >= 0) fprintf(f, ",\"plan_position\":%d", node);
    fprintf(f, "}}");
}

static void write_flow(FILE *f, const ref *from, const ref *to, uint64_t id, const char *name) {
    fprintf(f,
            ",\n{\"ph\":\"s\",\"id\":%llu,\"name\":\"%s\",\"cat\":\"flow\",\"pid\":%u,"
            "\"tid\":%u,\"ts\":%.3f}",
            (unsigned long long)id, name, from->e->device, from->tid, us(from->e->end) - 0.0005);
    fprintf(f,
            ",\n{\"ph\":\"f\",\"bp\":\"e\",\"id\":%llu,\"name\":\"%s\",\"cat\":\"flow\","
            "\"pid\":%u,\"tid\":%u,\"ts\":%.3f}",
            (unsigned long long)id, name, to->e->device, to->tid, us(to->e->start));
}

static int by_event_key(const void *a, const void *b) {
    const trace_event *x = ((const ref *)a)->e, *y = ((const ref *)b)->e;
    if (x->what != y->what) return (uintptr_t)x->what < (uintptr_t)y->what ? -1 : 1;
    if (x->generation != y->generation) return x->generation < y->generation ? -1 : 1;
    return 0;
}

static int by_replay_pos(const void *a, const void *b) {
    const trace_event *x = ((const ref *)a)->e, *y = ((const ref *)b)->e;
    if (x->plan != y->plan) return (uintptr_t)x->plan < (uintptr_t)y->plan ? -1 : 1;
    if (x->replay != y->replay) return x->replay < y->replay ? -1 : 1;
    if (x->pos != y->pos) return x->pos < y->pos ? -1 : 1;
    return 0;
}

/* Arrows from each event record to the waits it satisfied (eager or in a replay). */
static uint64_t write_event_flows(FILE *f, ref *all, size_t n, uint64_t id) {
    ref *records = malloc((n ? n : 1) * sizeof *records);
    if (!records) return id;
    size_t nr = 0;
    for (size_t i = 0; i < n; i++)
        if (all[i].e->type == MT_OP_EVENT_RECORD) records[nr++] = all[i];
    qsort(records, nr, sizeof *records, by_event_key);
    for (size_t i = 0; i < n; i++) {
        if (all[i].e->type != MT_OP_EVENT_WAIT) continue;
        const ref *r = bsearch(&all[i], records, nr, sizeof *records, by_event_key);
        if (r && r->e->stream_id != all[i].e->stream_id) write_flow(f, r, &all[i], ++id, "event");
    }
    free(records);
    return id;
}

/* Arrows along the edges of each replay that cross from one stream to another. */
static uint64_t write_replay_flows(FILE *f, ref *all, size_t n, uint64_t id) {
    ref *nodes = malloc((n ? n : 1) * sizeof *nodes);
    if (!nodes) return id;
    size_t nn = 0;
    for (size_t i = 0; i < n; i++)
        if (all[i].e->flags & EV_REPLAY_NODE) nodes[nn++] = all[i];
    qsort(nodes, nn, sizeof *nodes, by_replay_pos);
    for (size_t i = 0; i < nn; i++) {
        const trace_event *e = nodes[i].e;
        const uint32_t *preds;
        uint32_t np = mt_plan_cross_stream_preds(e->plan, e->pos, &preds);
        for (uint32_t k = 0; k < np; k++) {
            trace_event key = *e;
            key.pos = preds[k];
            ref probe = {&key, 0};
            const ref *p = bsearch(&probe, nodes, nn, sizeof *nodes, by_replay_pos);
            if (p) write_flow(f, p, &nodes[i], ++id, "dependency");
        }
    }
    free(nodes);
    return id;
}

/* Every published record of this session. */
static ref *collect(size_t *count) {
    uint64_t now = atomic_load(&session);
    size_t n = 0, cap = 1024;
    ref *all = malloc(cap * sizeof *all);
    if (!all) return NULL;
    pthread_mutex_lock(&buffers_lock);
    for (trace_buffer *b = buffers; b; b = b->next) {
        if (atomic_load_explicit(&b->published_session, memory_order_acquire) != now) continue;
        uint64_t published = atomic_load_explicit(&b->published, memory_order_acquire);
        /* the owner may have moved on to a new session meanwhile: then it is not ours */
        if (atomic_load_explicit(&b->published_session, memory_order_acquire) != now) continue;
        trace_chunk *c = b->first;
        for (uint64_t i = 0; i < published && c; i++) {
            if (i && i % CHUNK_EVENTS == 0)
                c = atomic_load_explicit(&c->next, memory_order_acquire);
            if (!c) break;
            if (n == cap) {
                ref *grown = realloc(all, cap * 2 * sizeof *all);
                if (!grown) {
                    pthread_mutex_unlock(&buffers_lock);
                    free(all);
                    return NULL;
                }
                all = grown;
                cap *= 2;
            }
            all[n++] = (ref){&c->events[i % CHUNK_EVENTS], b->tid};
        }
    }
    pthread_mutex_unlock(&buffers_lock);
    *count = n;
    return all;
}

/* Write the trace to `path` (to a temporary beside it, renamed: no partial file). */
static mtiart_status write_trace(const char *path) {
    calibrate();
    size_t n = 0;
    ref *all = collect(&n);
    if (!all) return mt_oom();
    size_t len = strlen(path);
    char *tmp = malloc(len + 32);
    if (!tmp) {
        free(all);
        return mt_oom();
    }
    snprintf(tmp, len + 32, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        int err = errno;
        free(tmp);
        free(all);
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "cannot write '%s': %s", path,
                            strerror(err));
    }
    fprintf(f,
            "{\"displayTimeUnit\":\"ns\",\"otherData\":{\"producer\":\"libmtiart %s\"},"
            "\"traceEvents\":[",
            mtiart_version_string());
    bool first = true;
    for (int d = 0; d < mt_num_devices; d++) {
        fprintf(f,
                "%s\n{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%d,\"tid\":0,"
                "\"args\":{\"name\":\"mtia:%d\"}}",
                first ? "" : ",", d, d);
        first = false;
    }
    pthread_mutex_lock(&buffers_lock);
    for (trace_buffer *b = buffers; b; b = b->next)
        for (int d = 0; d < mt_num_devices; d++)
            fprintf(f,
                    ",\n{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%u,"
                    "\"args\":{\"name\":\"worker %u\"}}",
                    d, b->tid, b->tid);
    pthread_mutex_unlock(&buffers_lock);
    pthread_mutex_lock(&held_lock);
    for (size_t i = 0; i < n; i++) write_slice(f, &all[i], &first);
    uint64_t id = write_event_flows(f, all, n, 0);
    write_replay_flows(f, all, n, id);
    pthread_mutex_unlock(&held_lock);
    fprintf(f, "\n]}\n");
    free(all);
    bool failed = ferror(f) != 0;
    failed |= fclose(f) != 0;
    if (failed || rename(tmp, path) != 0) {
        int err = errno;
        remove(tmp);
        free(tmp);
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "cannot write '%s': %s", path,
                            strerror(err ? err : EIO));
    }
    free(tmp);
    return MTIART_SUCCESS;
}

/* ------------------------------------------------------------------ public API */

MTIART_API mtiart_status mtiart_trace_start(void) {
    MT_API_ENTRY();
    MT_INIT_OR_RETURN();
    pthread_mutex_lock(&trace_lock);
    if (atomic_load(&mt_tracing)) {
        pthread_mutex_unlock(&trace_lock);
        return mt_set_error(MTIART_ERROR_NOT_PERMITTED, "a trace is already running");
    }
    release_held(); /* a trace stopped without being written */
    start_ns = mt_now_ns();
    start_clock = mt_trace_clock();
    atomic_fetch_add(&session, 1);
    atomic_store(&mt_tracing, 1);
    pthread_mutex_unlock(&trace_lock);
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_trace_flush(const char *path) {
    MT_API_ENTRY();
    MT_CHECK_NOT_NULL(path);
    pthread_mutex_lock(&trace_lock);
    mtiart_status st = !atomic_load(&mt_tracing)
                           ? mt_set_error(MTIART_ERROR_NOT_PERMITTED, "no trace is running")
                           : write_trace(path);
    pthread_mutex_unlock(&trace_lock);
    return st;
}

MTIART_API mtiart_status mtiart_trace_stop(const char *path) {
    MT_API_ENTRY();
    pthread_mutex_lock(&trace_lock);
    if (!atomic_load(&mt_tracing)) {
        pthread_mutex_unlock(&trace_lock);
        return mt_set_error(MTIART_ERROR_NOT_PERMITTED, "no trace is running");
    }
    atomic_store(&mt_tracing, 0);
    mtiart_status st = path ? write_trace(path) : MTIART_SUCCESS;
    release_held();
    pthread_mutex_unlock(&trace_lock);
    return st;
}
