/*
 * Saved graphs: mtiart_graph_save writes a graph in the format of docs/graph-format.md,
 * mtiart_graph_load reads one back, and the bindings of executables instantiated from a
 * loaded graph (mtiart_graph_exec_bind).
 *
 * Loading has two stages. parse() reads the file into an artifact: every count, size,
 * offset and index is checked against the file and against each other, and nothing
 * outside the buffer is touched (tests/fuzz/fuzz_graph_file.c runs it on hostile
 * input). materialize() then gives it a life in the process:
 * kernels are resolved (user libraries under the caller's policy), the graph's memory is
 * allocated in a fresh pool, constants are restored, events created. build_dag() makes
 * the nodes from the artifact and the current addresses of the bindings: the loaded graph
 * is built with none bound, and each bind builds it again with the new address and
 * updates the executable in place (mt_exec_update_dag), so that binding costs one update.
 *
 * A node kind the format does not know yet is refused in one place on each side:
 * save_node() and parse_node().
 */
#include "internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ the format */

#define GF_MAGIC "MTIAGRF"
#define GF_MAJOR 1
#define GF_MINOR 0
#define GF_BYTE_ORDER 0x01020304u
#define GF_HEADER_SIZE 64
#define GF_SECTION_SIZE 24
#define GF_MAX_SECTIONS 64
#define GF_MAX_NAME 255
#define GF_MAX_STRING 4096
#define GF_MAX_BLOCKS (1u << 24)

enum gf_section {
    SEC_STRINGS = 1,
    SEC_BINDINGS = 2,
    SEC_REGIONS = 3,
    SEC_KERNELS = 4,
    SEC_EVENTS = 5,
    SEC_GRAPHS = 6,
    SEC_NODES = 7,
    SEC_DEPS = 8,
    SEC_ARGS = 9,
    SEC_DATA = 10,
    SEC_LAST = SEC_DATA
};

/* Record sizes in the file. */
enum {
    BINDING_SIZE = 40,
    REGION_SIZE = 16,
    KERNEL_SIZE = 16,
    EVENT_SIZE = 8,
    GRAPH_SIZE = 16,
    NODE_SIZE = 80,
    DEP_SIZE = 4,
    ARG_SIZE = 32,
};

/* Node kinds in the file (not the runtime's op types: the file's numbers never change). */
enum gf_kind {
    GK_KERNEL = 1,
    GK_MEMCPY = 2,
    GK_FILL = 3,
    GK_EMPTY = 4,
    GK_EVENT_RECORD = 5,
    GK_EVENT_WAIT = 6,
    GK_CHILD = 7,
    GK_CONDITIONAL = 8,
};

enum gf_space { SPACE_NONE = 0, SPACE_REGION = 1, SPACE_BINDING = 2 };

#define GF_BINDING_HOST 4u /* flag bit of a binding record: host memory */
#define GF_USER_KERNEL 0x80000000u
/* How aligned a kernel may assume a region or a bound binding starts: the allocator's
 * blocks are, and so are the tensors a program binds. */
#define GF_BASE_ALIGN 64u

typedef struct gf_ref {
    uint32_t space, index;
    uint64_t offset;
} gf_ref;

typedef struct gf_arg {
    uint32_t kind, size; /* size: VALUE bytes */
    gf_ref ref;          /* BUFFER: where; VALUE: ref.offset is the DATA offset */
    uint64_t extent;
} gf_arg;

typedef struct gf_node {
    uint32_t kind, num_deps, first_dep, num_blocks;
    uint32_t a, b, c;
    uint64_t x, y;
    gf_ref r0, r1;
} gf_node;

typedef struct gf_graph {
    uint32_t first_node, num_nodes;
} gf_graph;

typedef struct gf_binding {
    char *name;
    uint32_t flags; /* mtiart_binding_flags | GF_BINDING_HOST */
    uint64_t bytes;
    uint64_t data_offset; /* constants: their contents in DATA */
    uint32_t align;       /* what a bound address must be aligned to (conditions in it) */
    void *constant;       /* constants, once materialized: their device memory (in blocks) */
} gf_binding;

typedef struct gf_kernel {
    char *library, *symbol;
    mtiart_kernel_fn fn;
} gf_kernel;

struct mt_artifact {
    atomic_int refcount;
    mt_device *dev;
    uint16_t major, minor;
    gf_binding *bindings;
    size_t num_bindings;
    uint64_t *region_bytes;
    void **regions; /* their memory, in the graph's pool (in blocks) */
    size_t num_regions;
    gf_kernel *kernels;
    size_t num_kernels;
    uint32_t *event_flags;
    mt_event **events;
    size_t num_events;
    gf_graph *graphs;
    size_t num_graphs;
    gf_node *nodes;
    size_t num_nodes;
    uint32_t *deps;
    size_t num_deps;
    gf_arg *args;
    size_t num_args;
    uint8_t *data;
    size_t data_size;
    mt_pool *pool;
    mt_blocks *blocks; /* the regions' and constants' memory (a reference) */
    mt_dag *loaded;    /* the graph as loaded, nothing bound (a reference) */
};

struct mt_blocks {
    atomic_int refcount;
    size_t count;
    void *ptr[]; /* device allocations, freed with the last reference */
};

struct mt_bindings {
    mt_artifact *art;
    void **base; /* per binding: its address now (constants: theirs), NULL while unbound */
    atomic_size_t unbound;
};

/* ------------------------------------------------------------------ little-endian bytes */

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

/* ------------------------------------------------------------------ artifacts */

static void artifact_free(mt_artifact *a) {
    if (a->loaded) mt_dag_unref(a->loaded);
    for (size_t i = 0; i < a->num_bindings; i++) free(a->bindings[i].name);
    if (a->blocks) mt_blocks_unref(a->blocks);
    for (size_t i = 0; i < a->num_kernels; i++) {
        free(a->kernels[i].library);
        free(a->kernels[i].symbol);
    }
    for (size_t i = 0; a->events && i < a->num_events; i++)
        if (a->events[i]) mt_event_unref(a->events[i]);
    if (a->pool) mt_pool_release(a->pool);
    free(a->bindings);
    free(a->region_bytes);
    free(a->regions);
    free(a->kernels);
    free(a->event_flags);
    free(a->events);
    free(a->graphs);
    free(a->nodes);
    free(a->deps);
    free(a->args);
    free(a->data);
    free(a);
}

void mt_blocks_ref(mt_blocks *b) {
    atomic_fetch_add_explicit(&b->refcount, 1, memory_order_relaxed);
}

void mt_blocks_unref(mt_blocks *b) {
    if (atomic_fetch_sub_explicit(&b->refcount, 1, memory_order_acq_rel) != 1) return;
    for (size_t i = 0; i < b->count; i++) mtiart_free(b->ptr[i]);
    free(b);
}

void mt_artifact_unref(mt_artifact *a) {
    if (atomic_fetch_sub_explicit(&a->refcount, 1, memory_order_acq_rel) == 1) artifact_free(a);
}

/* ================================================================== saving */

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
    bool failed;
} buf;

/* Room for n more bytes (zeroed) at the end; NULL once out of memory. */
static uint8_t *buf_grow(buf *b, size_t n) {
    if (b->failed) return NULL;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return NULL;
        }
        b->p = p;
        b->cap = cap;
    }
    uint8_t *at = b->p + b->len;
    memset(at, 0, n);
    b->len += n;
    return at;
}

typedef struct saver {
    mt_device *dev;
    mt_pool **pools;
    size_t num_pools;
    const mtiart_graph_binding *bindings;
    size_t num_bindings;
    bool *binding_host;
    uintptr_t *region_base;
    size_t *region_size;
    size_t num_regions, cap_regions;
    const mt_dag **dags; /* graphs in file order: the top one, then bodies */
    size_t num_dags, cap_dags;
    const mt_event **recorded;
    size_t num_recorded, cap_recorded;
    mtiart_kernel_fn *kernels; /* user kernels, in file order */
    size_t num_kernels, cap_kernels;
    buf strings, kernel_recs, graph_recs, nodes, deps, args, data;
    /* the node being saved, named in messages */
    uint32_t at_graph;
    size_t at_index;
    const mt_node *at_node;
} saver;

static bool grow_array(void **array, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return true;
    size_t cap2 = *cap ? *cap * 2 : 16;
    while (cap2 < need) cap2 *= 2;
    void *p = realloc(*array, cap2 * size);
    if (!p) return false;
    *array = p;
    *cap = cap2;
    return true;
}

static uint32_t add_string(saver *s, const char *str) {
    size_t n = strlen(str) + 1;
    uint32_t at = (uint32_t)s->strings.len;
    uint8_t *p = buf_grow(&s->strings, n);
    if (p) memcpy(p, str, n);
    return at;
}

/* DATA offset of a copy of `bytes` bytes (8-aligned). */
static uint64_t add_data(saver *s, const void *src, size_t bytes) {
    size_t at = s->data.len;
    uint8_t *p = buf_grow(&s->data, (bytes + 7) & ~(size_t)7);
    if (p && bytes) memcpy(p, src, bytes);
    return at;
}

/* "node 3 (kernel mtiart_matmul)", "node 0 (fill) of body 2": the node being saved. */
static void describe_node(const saver *s, char *out, size_t cap) {
    static const char *kinds[] = {"kernel",     "memcpy", "fill",  "host function", "event record",
                                  "event wait", "empty",  "graph", "child graph",   "conditional"};
    const mt_node *n = s->at_node;
    char name[96] = "";
    if (n->op.type == MT_OP_KERNEL) mt_kernel_name(n->op.fn.kernel, name, sizeof name);
    const char *kind = n->op.type < sizeof kinds / sizeof *kinds ? kinds[n->op.type] : "unknown";
    int len = snprintf(out, cap, "node %zu (%s%s%s)", s->at_index, kind, name[0] ? " " : "", name);
    if (s->at_graph && len >= 0 && (size_t)len < cap)
        snprintf(out + len, cap - (size_t)len, " of body %u", s->at_graph);
}

static mtiart_status save_fail(saver *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static mtiart_status save_fail(saver *s, const char *fmt, ...) {
    char where[192], detail[512];
    describe_node(s, where, sizeof where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return mt_set_error(MTIART_ERROR_INVALID_VALUE, "%s: %s", where, detail);
}

/* Where [ptr, ptr + bytes) is: in a binding (a host side only in a host binding), else in
 * the graph's own memory. */
static mtiart_status classify(saver *s, const void *ptr, uint64_t bytes, bool device_side,
                              const char *what, gf_ref *ref) {
    uintptr_t p = (uintptr_t)ptr;
    for (size_t i = 0; i < s->num_bindings; i++) {
        uintptr_t base = (uintptr_t)s->bindings[i].ptr;
        uint64_t size = s->bindings[i].bytes;
        if (p - base > size || bytes > size - (p - base)) continue;
        if (s->binding_host[i] == device_side)
            return save_fail(s,
                             "%s lies in binding '%s', which is %s memory where the node "
                             "needs %s memory",
                             what, s->bindings[i].name, s->binding_host[i] ? "host" : "device",
                             device_side ? "device" : "host");
        *ref = (gf_ref){SPACE_BINDING, (uint32_t)i, p - base};
        return MTIART_SUCCESS;
    }
    uintptr_t base;
    size_t size;
    for (size_t k = 0; device_side && k < s->num_pools; k++) {
        if (!mt_pool_segment_of(s->pools[k], ptr, bytes, &base, &size)) continue;
        size_t r = 0;
        while (r < s->num_regions && s->region_base[r] != base) r++;
        if (r == s->num_regions) {
            if (!grow_array((void **)&s->region_base, &s->cap_regions, r + 1,
                            sizeof *s->region_base))
                return mt_oom();
            size_t cap = s->cap_regions; /* region_size grows with region_base */
            size_t *sizes = realloc(s->region_size, cap * sizeof *sizes);
            if (!sizes) return mt_oom();
            s->region_size = sizes;
            s->region_base[r] = base;
            s->region_size[r] = size;
            s->num_regions++;
        }
        *ref = (gf_ref){SPACE_REGION, (uint32_t)r, p - base};
        return MTIART_SUCCESS;
    }
    return save_fail(s,
                     "%s [%p, +%llu bytes) is %s memory outside the graph's own pool: name it "
                     "as an input, output or constant binding",
                     what, ptr, (unsigned long long)bytes, device_side ? "device" : "host");
}

static void put_ref(uint8_t *p, const gf_ref *r) {
    put32(p, r->space);
    put32(p + 4, r->index);
    put64(p + 8, r->offset);
}

/* The file index of graph `d` (a body), added to the list when new. */
static mtiart_status graph_index(saver *s, const mt_dag *d, uint32_t *index) {
    for (size_t i = 0; i < s->num_dags; i++)
        if (s->dags[i] == d) {
            *index = (uint32_t)i;
            return MTIART_SUCCESS;
        }
    if (!grow_array((void **)&s->dags, &s->cap_dags, s->num_dags + 1, sizeof *s->dags))
        return mt_oom();
    s->dags[s->num_dags] = d;
    *index = (uint32_t)s->num_dags++;
    return MTIART_SUCCESS;
}

static mtiart_status kernel_ref(saver *s, mtiart_kernel_fn fn, uint32_t *ref) {
    uint32_t id = mt_builtin_kernel_id(fn);
    if (id) {
        *ref = id;
        return MTIART_SUCCESS;
    }
    for (size_t i = 0; i < s->num_kernels; i++)
        if (s->kernels[i] == fn) {
            *ref = GF_USER_KERNEL | (uint32_t)i;
            return MTIART_SUCCESS;
        }
    union {
        mtiart_kernel_fn fn;
        void *p;
    } cast = {.fn = fn};
    Dl_info info;
    if (!dladdr(cast.p, &info) || !info.dli_sname || info.dli_saddr != cast.p || !info.dli_fname ||
        !info.dli_fname[0]) {
        char name[96];
        mt_kernel_name(fn, name, sizeof name);
        return save_fail(s,
                         "kernel %s is not an exported symbol of a shared library (a Python "
                         "kernel, or a static or hidden function): a loader could not find it",
                         name);
    }
    /* The main program's own symbols resolve too, but no loader could open it. */
    void *lib = dlopen(info.dli_fname, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (!lib)
        return save_fail(s,
                         "kernel %s is in '%s', which is not a shared library a loader could "
                         "open (the program itself?)",
                         info.dli_sname, info.dli_fname);
    dlclose(lib);
    if (!grow_array((void **)&s->kernels, &s->cap_kernels, s->num_kernels + 1, sizeof *s->kernels))
        return mt_oom();
    uint8_t *rec = buf_grow(&s->kernel_recs, KERNEL_SIZE);
    if (!rec) return mt_oom();
    put32(rec, add_string(s, info.dli_fname));
    put32(rec + 4, add_string(s, info.dli_sname));
    s->kernels[s->num_kernels] = fn;
    *ref = GF_USER_KERNEL | (uint32_t)s->num_kernels++;
    return MTIART_SUCCESS;
}

static mtiart_status save_kernel(saver *s, const mt_node *n, uint8_t *rec) {
    const mt_op *op = &n->op;
    uint8_t *blob = mt_op_blob((mt_op *)op);
    uint16_t count;
    memcpy(&count, blob, 2);
    uint32_t ref = 0;
    mtiart_status st = kernel_ref(s, op->fn.kernel, &ref);
    if (st) return st;
    put32(rec + 16, ref);
    put32(rec + 20, count);
    put32(rec + 24, (uint32_t)(s->args.len / ARG_SIZE));
    uint32_t next_buffer = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint16_t off, next_off;
        memcpy(&off, blob + 2 + 2 * i, 2);
        size_t begin = (size_t)off << 3, end = op->u.kernel.blob_size;
        if (i + 1 < count) {
            memcpy(&next_off, blob + 2 + 2 * (i + 1), 2);
            end = (size_t)next_off << 3;
        }
        uint8_t *arec = buf_grow(&s->args, ARG_SIZE);
        if (!arec) return mt_oom();
        const mtiart_buffer_use *use =
            next_buffer < n->num_buffers && n->buffers[next_buffer].reserved == i
                ? &n->buffers[next_buffer++]
                : NULL;
        if (use) {
            char what[48];
            snprintf(what, sizeof what, "kernel argument %u", i);
            gf_ref r;
            if ((st = classify(s, (const void *)(uintptr_t)use->address, use->bytes, true, what,
                               &r)))
                return st;
            put32(arec, use->access);
            put_ref(arec + 8, &r);
            put64(arec + 24, use->bytes);
        } else {
            /* A value's size is the distance to the next argument: its padding (zeros)
             * comes along, which repacks into the same blob. */
            size_t size = end - begin;
            put32(arec, MTIART_ARG_VALUE);
            put32(arec + 4, (uint32_t)size);
            put64(arec + 16, add_data(s, blob + begin, size));
        }
    }
    return MTIART_SUCCESS;
}

static bool event_recorded(const saver *s, const mt_event *e, uint32_t *index) {
    for (size_t i = 0; i < s->num_recorded; i++)
        if (s->recorded[i] == e) {
            *index = (uint32_t)i;
            return true;
        }
    return false;
}

/* Every event the graph (or a body) records, in a first pass, so that a wait can tell an
 * event of the graph from an outside one. */
static mtiart_status collect_records(saver *s, const mt_dag *d, int depth) {
    if (depth > MT_MAX_NESTING) return MTIART_SUCCESS;
    for (size_t i = 0; i < d->num_nodes; i++) {
        const mt_node *n = &d->nodes[i];
        uint32_t index;
        if (n->op.type == MT_OP_EVENT_RECORD && !event_recorded(s, n->op.u.event.event, &index)) {
            if (!grow_array((void **)&s->recorded, &s->cap_recorded, s->num_recorded + 1,
                            sizeof *s->recorded))
                return mt_oom();
            s->recorded[s->num_recorded++] = n->op.u.event.event;
        }
        mtiart_status st;
        if (n->body && (st = collect_records(s, n->body, depth + 1))) return st;
    }
    return MTIART_SUCCESS;
}

/* One node's record. Every node kind the runtime has is either written here or refused
 * with its name. */
static mtiart_status save_node(saver *s, const mt_node *n, uint8_t *rec) {
    const mt_op *op = &n->op;
    mtiart_status st = MTIART_SUCCESS;
    gf_ref r0 = {0}, r1 = {0};
    put32(rec + 12, op->num_blocks);
    switch (op->type) {
    case MT_OP_KERNEL:
        put32(rec, GK_KERNEL);
        st = save_kernel(s, n, rec);
        break;
    case MT_OP_MEMCPY: {
        uint32_t kind = op->u.copy.kind;
        bool dst_dev =
            kind == MTIART_MEMCPY_HOST_TO_DEVICE || kind == MTIART_MEMCPY_DEVICE_TO_DEVICE;
        bool src_dev =
            kind == MTIART_MEMCPY_DEVICE_TO_HOST || kind == MTIART_MEMCPY_DEVICE_TO_DEVICE;
        put32(rec, GK_MEMCPY);
        put32(rec + 16, kind);
        put64(rec + 32, op->u.copy.bytes);
        if (op->u.copy.bytes &&
            ((st =
                  classify(s, op->u.copy.dst, op->u.copy.bytes, dst_dev, "the destination", &r0)) ||
             (st = classify(s, op->u.copy.src, op->u.copy.bytes, src_dev, "the source", &r1))))
            return st;
        break;
    }
    case MT_OP_FILL:
        put32(rec, GK_FILL);
        put32(rec + 16, op->u.fill.size);
        put64(rec + 32, op->u.fill.count);
        put64(rec + 40, op->u.fill.pattern);
        if (op->u.fill.count &&
            (st = classify(s, op->u.fill.dst, (uint64_t)op->u.fill.count * op->u.fill.size, true,
                           "the destination", &r0)))
            return st;
        break;
    case MT_OP_EMPTY: put32(rec, GK_EMPTY); break;
    case MT_OP_EVENT_RECORD:
    case MT_OP_EVENT_WAIT: {
        uint32_t index;
        if (!event_recorded(s, op->u.event.event, &index))
            return save_fail(s, "it waits for an event that no node of the graph records (an "
                                "outside event): a loaded graph could not be given it");
        put32(rec, op->type == MT_OP_EVENT_RECORD ? GK_EVENT_RECORD : GK_EVENT_WAIT);
        put32(rec + 16, index);
        break;
    }
    case MT_OP_CHILD:
    case MT_OP_CONDITIONAL: {
        uint32_t body;
        if ((st = graph_index(s, n->body, &body))) return st;
        put32(rec, op->type == MT_OP_CHILD ? GK_CHILD : GK_CONDITIONAL);
        put32(rec + 16, body);
        if (op->type == MT_OP_CONDITIONAL) {
            put32(rec + 20, op->u.cond.kind);
            put32(rec + 24, op->u.cond.flag_size);
            if ((st = classify(s, op->u.cond.flag, op->u.cond.flag_size, true, "the condition",
                               &r0)))
                return st;
        }
        break;
    }
    case MT_OP_HOST:
        return save_fail(s, "it runs a host function (a pointer into this process), which "
                            "cannot be saved");
    default: return save_fail(s, "a node of kind %u, which this format cannot hold", op->type);
    }
    put_ref(rec + 48, &r0);
    put_ref(rec + 64, &r1);
    return st;
}

static mtiart_status save_graphs(saver *s) {
    mtiart_status st = collect_records(s, s->dags[0], 0);
    /* Bodies are appended to s->dags as they are met, so this loop reaches them all. */
    for (size_t g = 0; st == MTIART_SUCCESS && g < s->num_dags; g++) {
        const mt_dag *d = s->dags[g];
        uint8_t *grec = buf_grow(&s->graph_recs, GRAPH_SIZE);
        if (!grec) return mt_oom();
        put32(grec, (uint32_t)(s->nodes.len / NODE_SIZE));
        put32(grec + 4, (uint32_t)d->num_nodes);
        for (size_t i = 0; st == MTIART_SUCCESS && i < d->num_nodes; i++) {
            const mt_node *n = &d->nodes[i];
            s->at_graph = (uint32_t)g;
            s->at_index = i;
            s->at_node = n;
            size_t at = s->nodes.len;
            if (!buf_grow(&s->nodes, NODE_SIZE)) return mt_oom();
            uint8_t rec[NODE_SIZE] = {0};
            put32(rec + 4, n->num_deps);
            put32(rec + 8, (uint32_t)(s->deps.len / DEP_SIZE));
            for (uint32_t k = 0; k < n->num_deps; k++) {
                uint8_t *drec = buf_grow(&s->deps, DEP_SIZE);
                if (!drec) return mt_oom();
                put32(drec, (uint32_t)n->deps[k]);
            }
            st = save_node(s, n, rec);
            memcpy(s->nodes.p + at, rec, NODE_SIZE);
        }
    }
    return st;
}

static mtiart_status check_bindings(saver *s) {
    for (size_t i = 0; i < s->num_bindings; i++) {
        const mtiart_graph_binding *b = &s->bindings[i];
        if (!b->name || !b->name[0] || strlen(b->name) > GF_MAX_NAME)
            return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                                "binding %zu: the name must be 1..%d bytes", i, GF_MAX_NAME);
        if (!b->ptr || !b->bytes)
            return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                                "binding '%s': NULL pointer or zero bytes", b->name);
        if (b->flags > MTIART_BINDING_CONSTANT)
            return mt_set_error(MTIART_ERROR_INVALID_VALUE, "binding '%s': unknown flags %u",
                                b->name, b->flags);
        int device;
        s->binding_host[i] = mt_pointer_device_quiet(b->ptr, &device) != MTIART_SUCCESS;
        if (!s->binding_host[i] &&
            mt_check_buffers(s->dev,
                             &(mt_buffer){b->ptr, b->bytes, MTIART_ARG_BUFFER_INOUT, -1, "binding"},
                             1, "graph", NULL, 0))
            return mt_error_context("binding '%s'", b->name);
        if (s->binding_host[i] && b->flags == MTIART_BINDING_CONSTANT)
            return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                                "constant '%s' is not device memory (constants are restored "
                                "into device memory)",
                                b->name);
        for (size_t k = 0; k < i; k++) {
            const mtiart_graph_binding *o = &s->bindings[k];
            if (!strcmp(o->name, b->name))
                return mt_set_error(MTIART_ERROR_INVALID_VALUE, "two bindings are named '%s'",
                                    b->name);
            uintptr_t p = (uintptr_t)b->ptr, q = (uintptr_t)o->ptr;
            if (p < q + o->bytes && q < p + b->bytes)
                return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                                    "bindings '%s' and '%s' overlap (each buffer is named once)",
                                    o->name, b->name);
        }
    }
    return MTIART_SUCCESS;
}

static void put_section(uint8_t *table, size_t i, uint32_t type, uint64_t offset, uint64_t size) {
    uint8_t *e = table + i * GF_SECTION_SIZE;
    put32(e, type);
    put32(e + 4, 0);
    put64(e + 8, offset);
    put64(e + 16, size);
}

/* The whole file in memory. */
static mtiart_status assemble(saver *s, buf *out) {
    buf bindings = {0}, regions = {0}, events = {0};
    for (size_t i = 0; i < s->num_bindings; i++) {
        const mtiart_graph_binding *b = &s->bindings[i];
        uint8_t *rec = buf_grow(&bindings, BINDING_SIZE);
        if (!rec) break;
        put32(rec, add_string(s, b->name));
        put32(rec + 4, b->flags | (s->binding_host[i] ? GF_BINDING_HOST : 0));
        put64(rec + 8, b->bytes);
        if (b->flags == MTIART_BINDING_CONSTANT) {
            put64(rec + 16, add_data(s, b->ptr, b->bytes));
            put64(rec + 24, b->bytes);
        }
    }
    for (size_t i = 0; i < s->num_regions; i++) {
        uint8_t *rec = buf_grow(&regions, REGION_SIZE);
        if (rec) put64(rec, s->region_size[i]);
    }
    for (size_t i = 0; i < s->num_recorded; i++) {
        uint8_t *rec = buf_grow(&events, EVENT_SIZE);
        if (rec) put32(rec, s->recorded[i]->flags);
    }
    const buf *parts[] = {&s->strings,    &bindings, &regions, &s->kernel_recs, &events,
                          &s->graph_recs, &s->nodes, &s->deps, &s->args,        &s->data};
    const size_t num_parts = sizeof parts / sizeof *parts;
    bool failed = false;
    for (size_t i = 0; i < num_parts; i++) failed |= parts[i]->failed;
    mtiart_status st = MTIART_SUCCESS;
    uint8_t *header = failed ? NULL : buf_grow(out, GF_HEADER_SIZE + num_parts * GF_SECTION_SIZE);
    if (!header) {
        st = mt_oom();
        goto done;
    }
    for (size_t i = 0; i < num_parts; i++) {
        size_t offset = (out->len + 7) & ~(size_t)7;
        if (!buf_grow(out, offset - out->len + parts[i]->len)) {
            st = mt_oom();
            goto done;
        }
        if (parts[i]->len) memcpy(out->p + offset, parts[i]->p, parts[i]->len);
        put_section(out->p + GF_HEADER_SIZE, i, (uint32_t)(i + 1), offset, parts[i]->len);
    }
    header = out->p;
    memcpy(header, GF_MAGIC, 8);
    put16(header + 8, GF_MAJOR);
    put16(header + 10, GF_MINOR);
    put32(header + 12, GF_BYTE_ORDER);
    put32(header + 16, GF_HEADER_SIZE);
    put32(header + 20, (uint32_t)num_parts);
    put64(header + 24, out->len);
    put32(header + 32, (uint32_t)s->dev->index);
done:
    free(bindings.p);
    free(regions.p);
    free(events.p);
    return st;
}

/* Write `data` to `path` whole or not at all: a temporary file next to it, flushed, then
 * renamed over it (and the directory flushed, so that the rename is durable too). */
static mtiart_status write_atomically(const char *path, const uint8_t *data, size_t size) {
    size_t len = strlen(path);
    char *tmp = malloc(len + 16);
    MT_CHECK_ALLOC(tmp);
    snprintf(tmp, len + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        mtiart_status st =
            mt_set_error(MTIART_ERROR_INVALID_VALUE,
                         "cannot create a temporary file next to '%s': %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    const char *failed = NULL;
    for (size_t done = 0; done < size && !failed;) {
        ssize_t n = write(fd, data + done, size - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) failed = "write";
        else done += (size_t)n;
    }
    if (!failed && fchmod(fd, 0644)) failed = "chmod";
    if (!failed && fsync(fd)) failed = "fsync";
    if (close(fd) && !failed) failed = "close";
    if (!failed && rename(tmp, path)) failed = "rename";
    if (failed) {
        int err = errno;
        unlink(tmp);
        free(tmp);
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "cannot write '%s' (%s): %s", path, failed,
                            strerror(err));
    }
    free(tmp);
    char *dir = strdup(path);
    if (dir) {
        char *slash = strrchr(dir, '/');
        const char *name = slash ? (slash == dir ? "/" : (*slash = '\0', dir)) : ".";
        int dfd = open(name, O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            fsync(dfd); /* best effort: not every file system can */
            close(dfd);
        }
        free(dir);
    }
    return MTIART_SUCCESS;
}

static mtiart_status save(mt_device *dev, const mt_dag *dag, mt_pool **pools, size_t num_pools,
                          const char *path, const mtiart_graph_binding *bindings,
                          size_t num_bindings) {
    if (!path || !path[0]) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "path is NULL or empty");
    if (num_bindings && !bindings)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "bindings is NULL but num_bindings is %zu",
                            num_bindings);
    if (num_bindings > 65536)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "%zu bindings (at most 65536)",
                            num_bindings);
    saver s = {.dev = dev,
               .pools = pools,
               .num_pools = num_pools,
               .bindings = bindings,
               .num_bindings = num_bindings};
    buf file = {0};
    mtiart_status st = MTIART_SUCCESS;
    s.binding_host = calloc(num_bindings ? num_bindings : 1, sizeof *s.binding_host);
    if (!s.binding_host) st = mt_oom();
    if (st == MTIART_SUCCESS) st = check_bindings(&s);
    uint32_t top;
    if (st == MTIART_SUCCESS) st = graph_index(&s, dag, &top);
    if (st == MTIART_SUCCESS) st = save_graphs(&s);
    bool has_constant = false;
    for (size_t i = 0; i < num_bindings; i++)
        has_constant |= bindings[i].flags == MTIART_BINDING_CONSTANT;
    /* Constants are read as the device has them once the work before the save is done. */
    if (st == MTIART_SUCCESS && has_constant && !(st = mt_check_may_wait()))
        st = mtiart_device_synchronize(dev->index);
    if (st == MTIART_SUCCESS) st = assemble(&s, &file);
    if (st == MTIART_SUCCESS) st = write_atomically(path, file.p, file.len);
    free(file.p);
    free(s.binding_host);
    free(s.region_base);
    free(s.region_size);
    free(s.dags);
    free(s.recorded);
    free(s.kernels);
    buf *bufs[] = {&s.strings, &s.kernel_recs, &s.graph_recs, &s.nodes, &s.deps, &s.args, &s.data};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]->p);
    return st;
}

MTIART_API mtiart_status mtiart_graph_save(mtiart_graph graph, const char *path,
                                           const mtiart_graph_binding *bindings,
                                           size_t num_bindings) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    mt_pool *pools[1] = {g->pool};
    return save(g->dev, g->dag, pools, g->pool ? 1 : 0, path, bindings, num_bindings);
}

MTIART_API mtiart_status mtiart_graph_exec_save(mtiart_graph_exec exec, const char *path,
                                                const mtiart_graph_binding *bindings,
                                                size_t num_bindings) {
    MT_API_ENTRY();
    LOOKUP_EXEC(x, exec);
    mt_pool *inline_pools[8], **pools = inline_pools;
    size_t n = mt_exec_pools(x, inline_pools, 8);
    if (n > 8) {
        pools = malloc(n * sizeof *pools);
        MT_CHECK_ALLOC(pools);
        n = mt_exec_pools(x, pools, n);
    }
    mt_dag *t = mt_exec_template(x);
    mtiart_status st = save(mt_exec_device(x), t, pools, n, path, bindings, num_bindings);
    mt_dag_unref(t);
    if (pools != inline_pools) free(pools);
    return st;
}

/* ================================================================== loading */

typedef struct reader {
    const uint8_t *data;
    size_t size;
    struct {
        uint64_t offset, size;
    } sec[SEC_LAST + 1];
    mt_artifact *art;
} reader;

static mtiart_status bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static mtiart_status bad(const char *fmt, ...) {
    char detail[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return mt_set_error(MTIART_ERROR_INVALID_VALUE, "not a valid saved graph: %s", detail);
}

static const uint8_t *section(const reader *r, int type) { return r->data + r->sec[type].offset; }

/* The records of a section: its size must be a whole number of them. */
static mtiart_status records(const reader *r, int type, size_t record, const char *what,
                             size_t *count) {
    if (r->sec[type].size % record)
        return bad("the %s section holds %llu bytes, not a whole number of %zu-byte records", what,
                   (unsigned long long)r->sec[type].size, record);
    *count = (size_t)(r->sec[type].size / record);
    return MTIART_SUCCESS;
}

/* A copy of the string at `offset` of the string section (1..max bytes, NUL-terminated
 * inside the section). */
static mtiart_status get_string(const reader *r, uint32_t offset, size_t max, const char *what,
                                char **out) {
    const char *strings = (const char *)section(r, SEC_STRINGS);
    uint64_t size = r->sec[SEC_STRINGS].size;
    if (offset >= size) return bad("%s: string offset %u is past the string section", what, offset);
    size_t room = (size_t)(size - offset);
    const char *end = memchr(strings + offset, '\0', room < max + 1 ? room : max + 1);
    if (!end)
        return bad("%s: the string at offset %u is unterminated or longer than %zu bytes", what,
                   offset, max);
    if (end == strings + offset) return bad("%s: empty string", what);
    *out = strndup(strings + offset, (size_t)(end - (strings + offset)));
    return *out ? MTIART_SUCCESS : mt_oom();
}

static mtiart_status parse_header(reader *r, uint16_t *major, uint16_t *minor) {
    if (r->size < GF_HEADER_SIZE)
        return bad("%zu bytes, shorter than the %d-byte header", r->size, GF_HEADER_SIZE);
    const uint8_t *h = r->data;
    if (memcmp(h, GF_MAGIC, 8)) return bad("wrong magic (not a graph file)");
    *major = get16(h + 8);
    *minor = get16(h + 10);
    uint32_t order = get32(h + 12);
    if (order == 0x04030201u)
        return mt_set_error(MTIART_ERROR_NOT_SUPPORTED,
                            "the graph file is big-endian; this library reads little-endian files");
    if (order != GF_BYTE_ORDER) return bad("unknown byte-order mark 0x%08x", order);
    if (*major > GF_MAJOR)
        return mt_set_error(MTIART_ERROR_NOT_SUPPORTED,
                            "the graph file has format version %u.%u, newer than the %d.%d this "
                            "library reads: load it with a newer libmtiart",
                            *major, *minor, GF_MAJOR, GF_MINOR);
    if (*major < 1) return bad("format version %u.%u does not exist", *major, *minor);
    uint32_t header_size = get32(h + 16), num_sections = get32(h + 20);
    uint64_t file_size = get64(h + 24);
    if (file_size != r->size)
        return bad("the header gives %llu bytes but there are %zu (truncated or padded)",
                   (unsigned long long)file_size, r->size);
    if (header_size < GF_HEADER_SIZE || header_size % 8 || header_size > r->size)
        return bad("header size %u", header_size);
    if (num_sections > GF_MAX_SECTIONS)
        return bad("%u sections (at most %d)", num_sections, GF_MAX_SECTIONS);
    if ((uint64_t)num_sections * GF_SECTION_SIZE > r->size - header_size)
        return bad("the section table runs past the end of the file");
    bool seen[SEC_LAST + 1] = {false};
    for (uint32_t i = 0; i < num_sections; i++) {
        const uint8_t *e = h + header_size + (size_t)i * GF_SECTION_SIZE;
        uint32_t type = get32(e);
        uint64_t offset = get64(e + 8), size = get64(e + 16);
        if (offset > r->size || size > r->size - offset)
            return bad("section %u (type %u) at [%llu, +%llu) runs past the end of the file", i,
                       type, (unsigned long long)offset, (unsigned long long)size);
        if (offset % 8) return bad("section %u (type %u) is not 8-byte aligned", i, type);
        if (type == 0 || type > SEC_LAST) continue; /* a later minor version's: skipped */
        if (seen[type]) return bad("section type %u appears twice", type);
        seen[type] = true;
        r->sec[type].offset = offset;
        r->sec[type].size = size;
    }
    if (!seen[SEC_GRAPHS] || !seen[SEC_NODES]) return bad("no graph or node section");
    return MTIART_SUCCESS;
}

static mtiart_status parse_tables(reader *r) {
    mt_artifact *a = r->art;
    mtiart_status st;
    size_t n = 0;
    a->data_size = (size_t)r->sec[SEC_DATA].size;
    if (a->data_size) {
        if (!(a->data = malloc(a->data_size))) return mt_oom();
        memcpy(a->data, section(r, SEC_DATA), a->data_size);
    }
    if ((st = records(r, SEC_BINDINGS, BINDING_SIZE, "binding", &n))) return st;
    if (n && !(a->bindings = calloc(n, sizeof *a->bindings))) return mt_oom();
    for (size_t i = 0; i < n; i++) {
        const uint8_t *rec = section(r, SEC_BINDINGS) + i * BINDING_SIZE;
        gf_binding *b = &a->bindings[i];
        a->num_bindings = i + 1;
        char what[32];
        snprintf(what, sizeof what, "binding %zu", i);
        if ((st = get_string(r, get32(rec), GF_MAX_NAME, what, &b->name))) return st;
        b->flags = get32(rec + 4);
        b->bytes = get64(rec + 8);
        b->data_offset = get64(rec + 16);
        uint64_t data_size = get64(rec + 24);
        uint32_t role = b->flags & ~GF_BINDING_HOST;
        if (role > MTIART_BINDING_CONSTANT) return bad("binding '%s': flags %u", b->name, b->flags);
        if (b->bytes == 0 || b->bytes > (UINT64_C(1) << 48))
            return bad("binding '%s': %llu bytes", b->name, (unsigned long long)b->bytes);
        if (role == MTIART_BINDING_CONSTANT &&
            ((b->flags & GF_BINDING_HOST) || data_size != b->bytes ||
             b->data_offset > a->data_size || data_size > a->data_size - b->data_offset))
            return bad("constant '%s': its %llu bytes at %llu are not in the data section", b->name,
                       (unsigned long long)data_size, (unsigned long long)b->data_offset);
        for (size_t k = 0; k < i; k++)
            if (!strcmp(a->bindings[k].name, b->name))
                return bad("two bindings are named '%s'", b->name);
    }
    if ((st = records(r, SEC_REGIONS, REGION_SIZE, "region", &a->num_regions))) return st;
    if (a->num_regions && (!(a->region_bytes = calloc(a->num_regions, sizeof *a->region_bytes)) ||
                           !(a->regions = calloc(a->num_regions, sizeof *a->regions))))
        return mt_oom();
    for (size_t i = 0; i < a->num_regions; i++) {
        a->region_bytes[i] = get64(section(r, SEC_REGIONS) + i * REGION_SIZE);
        if (a->region_bytes[i] == 0 || a->region_bytes[i] > (UINT64_C(1) << 48))
            return bad("region %zu: %llu bytes", i, (unsigned long long)a->region_bytes[i]);
    }
    if ((st = records(r, SEC_KERNELS, KERNEL_SIZE, "kernel", &n))) return st;
    if (n && !(a->kernels = calloc(n, sizeof *a->kernels))) return mt_oom();
    for (size_t i = 0; i < n; i++) {
        const uint8_t *rec = section(r, SEC_KERNELS) + i * KERNEL_SIZE;
        a->num_kernels = i + 1;
        char what[32];
        snprintf(what, sizeof what, "kernel %zu", i);
        if ((st = get_string(r, get32(rec), PATH_MAX, what, &a->kernels[i].library)) ||
            (st = get_string(r, get32(rec + 4), GF_MAX_STRING, what, &a->kernels[i].symbol)))
            return st;
    }
    if ((st = records(r, SEC_EVENTS, EVENT_SIZE, "event", &a->num_events))) return st;
    if (a->num_events && (!(a->event_flags = calloc(a->num_events, sizeof *a->event_flags)) ||
                          !(a->events = calloc(a->num_events, sizeof *a->events))))
        return mt_oom();
    for (size_t i = 0; i < a->num_events; i++) {
        a->event_flags[i] = get32(section(r, SEC_EVENTS) + i * EVENT_SIZE);
        if (a->event_flags[i] & ~(uint32_t)(MTIART_EVENT_TIMING | MTIART_EVENT_BLOCKING_SYNC))
            return bad("event %zu: flags %u", i, a->event_flags[i]);
    }
    if ((st = records(r, SEC_DEPS, DEP_SIZE, "dependency", &a->num_deps))) return st;
    if (a->num_deps && !(a->deps = malloc(a->num_deps * sizeof *a->deps))) return mt_oom();
    for (size_t i = 0; i < a->num_deps; i++) a->deps[i] = get32(section(r, SEC_DEPS) + 4 * i);
    if ((st = records(r, SEC_ARGS, ARG_SIZE, "argument", &a->num_args))) return st;
    if (a->num_args && !(a->args = malloc(a->num_args * sizeof *a->args))) return mt_oom();
    for (size_t i = 0; i < a->num_args; i++) {
        const uint8_t *rec = section(r, SEC_ARGS) + i * ARG_SIZE;
        a->args[i] = (gf_arg){get32(rec),
                              get32(rec + 4),
                              {get32(rec + 8), get32(rec + 12), get64(rec + 16)},
                              get64(rec + 24)};
    }
    if ((st = records(r, SEC_GRAPHS, GRAPH_SIZE, "graph", &a->num_graphs))) return st;
    if (a->num_graphs == 0) return bad("no graph");
    if (!(a->graphs = calloc(a->num_graphs, sizeof *a->graphs))) return mt_oom();
    if ((st = records(r, SEC_NODES, NODE_SIZE, "node", &a->num_nodes))) return st;
    if (a->num_nodes && !(a->nodes = malloc(a->num_nodes * sizeof *a->nodes))) return mt_oom();
    for (size_t i = 0; i < a->num_nodes; i++) {
        const uint8_t *rec = section(r, SEC_NODES) + i * NODE_SIZE;
        a->nodes[i] = (gf_node){get32(rec),
                                get32(rec + 4),
                                get32(rec + 8),
                                get32(rec + 12),
                                get32(rec + 16),
                                get32(rec + 20),
                                get32(rec + 24),
                                get64(rec + 32),
                                get64(rec + 40),
                                {get32(rec + 48), get32(rec + 52), get64(rec + 56)},
                                {get32(rec + 64), get32(rec + 68), get64(rec + 72)}};
    }
    for (size_t i = 0; i < a->num_graphs; i++) {
        const uint8_t *rec = section(r, SEC_GRAPHS) + i * GRAPH_SIZE;
        gf_graph *g = &a->graphs[i];
        *g = (gf_graph){get32(rec), get32(rec + 4)};
        if ((uint64_t)g->first_node + g->num_nodes > a->num_nodes)
            return bad("graph %zu: nodes [%u, +%u) past the %zu nodes of the file", i,
                       g->first_node, g->num_nodes, a->num_nodes);
    }
    return MTIART_SUCCESS;
}

/* Where a node check is (messages are only formatted when one fails: loading checks
 * every node of large graphs). */
typedef struct site {
    size_t graph;
    uint32_t node;
    int arg; /* a kernel argument, or -1 */
} site;

static mtiart_status bad_at(const site *at, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static mtiart_status bad_at(const site *at, const char *fmt, ...) {
    char detail[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (at->arg >= 0)
        return bad("graph %zu node %u argument %d: %s", at->graph, at->node, at->arg, detail);
    return bad("graph %zu node %u: %s", at->graph, at->node, detail);
}

/* A reference to `extent` bytes: in a region or binding, on the side (device or host) the
 * node needs. Conditions must be in a region. */
static mtiart_status check_ref(const mt_artifact *a, const gf_ref *ref, uint64_t extent,
                               bool device_side, const site *at, const char *what) {
    uint64_t size;
    if (ref->space == SPACE_REGION && device_side && ref->index < a->num_regions) {
        size = a->region_bytes[ref->index];
    } else if (ref->space == SPACE_BINDING && ref->index < a->num_bindings &&
               !(a->bindings[ref->index].flags & GF_BINDING_HOST) == device_side) {
        size = a->bindings[ref->index].bytes;
    } else {
        return bad_at(at, "%s is in space %u index %u, which does not exist or is not %s memory",
                      what, ref->space, ref->index, device_side ? "device" : "host");
    }
    if (ref->offset > size || extent > size - ref->offset)
        return bad_at(at, "%s [%llu, +%llu) runs past the %llu bytes it lies in", what,
                      (unsigned long long)ref->offset, (unsigned long long)extent,
                      (unsigned long long)size);
    return MTIART_SUCCESS;
}

/* A built-in kernel trusts the host side of its operation to have checked its parameters;
 * a saved launch had no such host, so the kernel's registry entry checks them against the
 * extents of the buffers the node passes. */
static mtiart_status check_builtin_launch(const mt_artifact *a, const gf_node *n, site *at) {
    mtiart_kernel_fn fn = mt_builtin_kernel_by_id(n->a);
    const gf_arg *args = &a->args[n->c];
    uint64_t extent[MT_MAX_ARGS], align[MT_MAX_ARGS];
    for (uint32_t i = 1; i < n->b; i++) {
        extent[i - 1] = args[i].extent;
        /* Regions and bindings start at least this aligned; an offset can only lower it. */
        uint64_t off = args[i].ref.offset | GF_BASE_ALIGN;
        align[i - 1] = off & (0 - off);
    }
    char why[200];
    int fault = mt_builtin_kernel_validate(fn, a->data + args[0].ref.offset, args[0].size, extent,
                                           align, n->b - 1, n->num_blocks, why, sizeof why);
    if (fault < 0) return MTIART_SUCCESS;
    at->arg = fault;
    return bad_at(at, "%s: %s", mt_builtin_kernel_name(fn), why);
}

static mtiart_status parse_kernel(const mt_artifact *a, const gf_node *n, site *at) {
    bool user = n->a & GF_USER_KERNEL;
    if (user ? (n->a & ~GF_USER_KERNEL) >= a->num_kernels : !mt_builtin_kernel_by_id(n->a))
        return bad_at(at, "%s kernel %u does not exist", user ? "user" : "built-in",
                      n->a & ~GF_USER_KERNEL);
    if (n->num_blocks == 0 || n->num_blocks > GF_MAX_BLOCKS)
        return bad_at(at, "%u blocks", n->num_blocks);
    if (n->b > MT_MAX_ARGS || (uint64_t)n->c + n->b > a->num_args)
        return bad_at(at, "arguments [%u, +%u) past the %zu of the file (at most %d a kernel)",
                      n->c, n->b, a->num_args, MT_MAX_ARGS);
    for (uint32_t i = 0; i < n->b; i++) {
        const gf_arg *arg = &a->args[n->c + i];
        at->arg = (int)i;
        if (arg->kind == MTIART_ARG_VALUE) {
            if (arg->size == 0 || arg->size > 4096 || arg->ref.offset > a->data_size ||
                arg->size > a->data_size - arg->ref.offset)
                return bad_at(at, "%u value bytes at %llu, not in the data section", arg->size,
                              (unsigned long long)arg->ref.offset);
        } else if (arg->kind <= MTIART_ARG_BUFFER_INOUT) {
            mtiart_status st = check_ref(a, &arg->ref, arg->extent, true, at, "the buffer");
            if (st) return st;
        } else {
            return bad_at(at, "kind %u", arg->kind);
        }
        /* The kernel library reads its parameter struct from argument 0 and buffers after. */
        if (!user && (i == 0) != (arg->kind == MTIART_ARG_VALUE))
            return bad_at(at, "a built-in kernel takes its parameters first, then buffers");
    }
    if (user) return MTIART_SUCCESS;
    if (n->b == 0) return bad_at(at, "a built-in kernel without parameters");
    return check_builtin_launch(a, n, at);
}

static bool power_of_two_size(uint32_t size) {
    return size == 1 || size == 2 || size == 4 || size == 8;
}

/* A copy or fill of nothing points nowhere (its references are never resolved). */
static mtiart_status no_refs(const gf_node *n, const site *at) {
    if (n->r0.space != SPACE_NONE || n->r1.space != SPACE_NONE)
        return bad_at(at, "an empty copy or fill with memory references");
    return MTIART_SUCCESS;
}

/* One node of graph `graph` at `local` index. Every node kind the format knows is checked
 * here; any other number is refused. */
static mtiart_status parse_node(mt_artifact *a, size_t graph, uint32_t local, const gf_node *n) {
    site where = {graph, local, -1}, *at = &where;
    if ((uint64_t)n->first_dep + n->num_deps > a->num_deps)
        return bad_at(at, "dependencies [%u, +%u) past the %zu of the file", n->first_dep,
                      n->num_deps, a->num_deps);
    for (uint32_t k = 0; k < n->num_deps; k++)
        if (a->deps[n->first_dep + k] >= local)
            return bad_at(at, "depends on node %u, which does not come before it",
                          a->deps[n->first_dep + k]);
    switch (n->kind) {
    case GK_KERNEL: return parse_kernel(a, n, at);
    case GK_MEMCPY: {
        if (n->a > MTIART_MEMCPY_DEVICE_TO_DEVICE) return bad_at(at, "copy kind %u", n->a);
        if (n->x == 0) return no_refs(n, at);
        bool dst_dev =
            n->a == MTIART_MEMCPY_HOST_TO_DEVICE || n->a == MTIART_MEMCPY_DEVICE_TO_DEVICE;
        bool src_dev =
            n->a == MTIART_MEMCPY_DEVICE_TO_HOST || n->a == MTIART_MEMCPY_DEVICE_TO_DEVICE;
        mtiart_status st = check_ref(a, &n->r0, n->x, dst_dev, at, "destination");
        return st ? st : check_ref(a, &n->r1, n->x, src_dev, at, "source");
    }
    case GK_FILL:
        if (!power_of_two_size(n->a)) return bad_at(at, "pattern of %u bytes", n->a);
        if (n->x > UINT64_MAX / n->a) return bad_at(at, "fill count overflows");
        return n->x ? check_ref(a, &n->r0, n->x * n->a, true, at, "destination") : no_refs(n, at);
    case GK_EMPTY: return MTIART_SUCCESS;
    case GK_EVENT_RECORD:
    case GK_EVENT_WAIT:
        if (n->a >= a->num_events) return bad_at(at, "event %u does not exist", n->a);
        return MTIART_SUCCESS;
    case GK_CHILD:
    case GK_CONDITIONAL:
        if (n->a >= a->num_graphs || n->a == graph)
            return bad_at(at, "body graph %u does not exist", n->a);
        if (n->kind == GK_CHILD) return MTIART_SUCCESS;
        if (n->b > MTIART_CONDITIONAL_WHILE) return bad_at(at, "conditional type %u", n->b);
        if (!power_of_two_size(n->c)) return bad_at(at, "condition of %u bytes", n->c);
        if (n->r0.offset % n->c) return bad_at(at, "the condition is not aligned to its size");
        mtiart_status st = check_ref(a, &n->r0, n->c, true, at, "condition");
        /* A binding holding a condition must be bound as aligned as the condition. */
        if (st == MTIART_SUCCESS && n->r0.space == SPACE_BINDING &&
            a->bindings[n->r0.index].align < n->c)
            a->bindings[n->r0.index].align = n->c;
        return st;
    default: return bad_at(at, "unknown node kind %u", n->kind);
    }
}

/* Bodies form no cycle and nest at most MT_MAX_NESTING deep (state: 0 unseen, 1 on the
 * path, 2 done). */
static mtiart_status check_nesting(const mt_artifact *a, size_t graph, uint8_t *state, int depth) {
    if (depth > MT_MAX_NESTING)
        return bad("bodies nest more than %d deep (or form a cycle)", MT_MAX_NESTING);
    if (state[graph] == 2) return MTIART_SUCCESS;
    if (state[graph] == 1) return bad("graph %zu is its own body (a cycle)", graph);
    state[graph] = 1;
    const gf_graph *g = &a->graphs[graph];
    for (uint32_t i = 0; i < g->num_nodes; i++) {
        const gf_node *n = &a->nodes[g->first_node + i];
        if (n->kind != GK_CHILD && n->kind != GK_CONDITIONAL) continue;
        mtiart_status st = check_nesting(a, n->a, state, depth + 1);
        if (st) return st;
    }
    state[graph] = 2;
    return MTIART_SUCCESS;
}

static mtiart_status parse(const uint8_t *data, size_t size, mt_artifact **out) {
    mt_artifact *a = calloc(1, sizeof *a);
    MT_CHECK_ALLOC(a);
    atomic_init(&a->refcount, 1);
    reader r = {.data = data, .size = size, .art = a};
    mtiart_status st = parse_header(&r, &a->major, &a->minor);
    if (st == MTIART_SUCCESS) st = parse_tables(&r);
    for (size_t g = 0; st == MTIART_SUCCESS && g < a->num_graphs; g++)
        for (uint32_t i = 0; st == MTIART_SUCCESS && i < a->graphs[g].num_nodes; i++)
            st = parse_node(a, g, i, &a->nodes[a->graphs[g].first_node + i]);
    if (st == MTIART_SUCCESS) {
        uint8_t *state = calloc(a->num_graphs, 1);
        st = state ? check_nesting(a, 0, state, 0) : mt_oom();
        free(state);
    }
    if (st) {
        artifact_free(a);
        return st;
    }
    *out = a;
    return MTIART_SUCCESS;
}

/* ------------------------------------------------------------------ materializing */

static bool library_allowed(const mtiart_load_options *o, const char *library) {
    if (!o || !(o->flags & MTIART_LOAD_RESTRICT_LIBRARIES)) return true;
    for (uint32_t i = 0; i < o->num_allowed_libraries; i++)
        if (o->allowed_libraries[i] && !strcmp(o->allowed_libraries[i], library)) return true;
    return false;
}

static mtiart_status resolve_kernels(mt_artifact *a, const mtiart_load_options *o) {
    for (size_t i = 0; i < a->num_kernels; i++) {
        gf_kernel *k = &a->kernels[i];
        if (o && o->flags & MTIART_LOAD_BUILTIN_KERNELS_ONLY)
            return mt_set_error(MTIART_ERROR_NOT_PERMITTED,
                                "the graph calls user kernel '%s' of '%s', which "
                                "MTIART_LOAD_BUILTIN_KERNELS_ONLY refuses",
                                k->symbol, k->library);
        void *lib = dlopen(k->library, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
        if (!lib && !library_allowed(o, k->library))
            return mt_set_error(MTIART_ERROR_NOT_PERMITTED,
                                "kernel '%s' is in library '%s', which is neither loaded nor on "
                                "the allow-list (MTIART_LOAD_RESTRICT_LIBRARIES)",
                                k->symbol, k->library);
        if (!lib && !(lib = dlopen(k->library, RTLD_NOW | RTLD_LOCAL))) {
            const char *why = dlerror();
            return mt_set_error(MTIART_ERROR_LOAD_FAILED, "kernel '%s': %s", k->symbol,
                                why ? why : "dlopen failed");
        }
        union {
            void *p;
            mtiart_kernel_fn fn;
        } cast = {.p = dlsym(lib, k->symbol)};
        if (!cast.p)
            return mt_set_error(MTIART_ERROR_LOAD_FAILED, "library '%s' has no symbol '%s'",
                                k->library, k->symbol);
        k->fn = cast.fn; /* the library stays loaded, as with mtiart_kernel_load */
    }
    return MTIART_SUCCESS;
}

/* The address a reference has now (placeholders, small numbers, for unbound bindings:
 * launches are refused until they are bound). */
static uintptr_t address(const mt_artifact *a, void *const *base, const gf_ref *ref) {
    if (ref->space == SPACE_REGION) return (uintptr_t)a->regions[ref->index] + ref->offset;
    if (ref->space == SPACE_BINDING) return (uintptr_t)base[ref->index] + ref->offset;
    return 0;
}

static mtiart_status build_graph(const mt_artifact *a, void *const *base, size_t graph,
                                 mt_dag **memo, mt_dag **out);

static mtiart_status build_node(const mt_artifact *a, void *const *base, mt_dag **memo, mt_dag *d,
                                const gf_node *n) {
    mt_op op = {.type = MT_OP_EMPTY, .num_blocks = 1};
    mt_dag *body = NULL;
    mtiart_arg args[MT_MAX_ARGS];
    uint32_t num_args = 0;
    mtiart_status st = MTIART_SUCCESS;
    switch (n->kind) {
    case GK_KERNEL: {
        num_args = n->b;
        for (uint32_t i = 0; i < num_args; i++) {
            const gf_arg *g = &a->args[n->c + i];
            if (g->kind == MTIART_ARG_VALUE)
                args[i] = (mtiart_arg){MTIART_ARG_VALUE, g->size, a->data + g->ref.offset, 0};
            else
                args[i] =
                    (mtiart_arg){g->kind, 0, (const void *)address(a, base, &g->ref), g->extent};
        }
        mtiart_kernel_fn fn = n->a & GF_USER_KERNEL ? a->kernels[n->a & ~GF_USER_KERNEL].fn
                                                    : mt_builtin_kernel_by_id(n->a);
        st = mt_op_pack_kernel(&op, fn, n->num_blocks, args, num_args);
        break;
    }
    case GK_MEMCPY:
        op.type = MT_OP_MEMCPY;
        op.u.copy.kind = n->a;
        op.u.copy.bytes = n->x;
        op.u.copy.dst = (void *)address(a, base, &n->r0);
        op.u.copy.src = (const void *)address(a, base, &n->r1);
        break;
    case GK_FILL:
        op.type = MT_OP_FILL;
        op.u.fill.size = n->a;
        op.u.fill.count = n->x;
        op.u.fill.pattern = n->a == 8 ? n->y : n->y & ((UINT64_C(1) << (8 * n->a)) - 1);
        op.u.fill.dst = (void *)address(a, base, &n->r0);
        break;
    case GK_EVENT_RECORD:
    case GK_EVENT_WAIT:
        op.type = n->kind == GK_EVENT_RECORD ? MT_OP_EVENT_RECORD : MT_OP_EVENT_WAIT;
        op.u.event.event = a->events[n->a];
        mt_event_ref(op.u.event.event);
        break;
    case GK_CHILD:
    case GK_CONDITIONAL:
        op.type = n->kind == GK_CHILD ? MT_OP_CHILD : MT_OP_CONDITIONAL;
        st = build_graph(a, base, n->a, memo, &body);
        if (st == MTIART_SUCCESS && n->kind == GK_CONDITIONAL) {
            op.u.cond.kind = n->b;
            op.u.cond.flag_size = n->c;
            op.u.cond.flag = (const void *)address(a, base, &n->r0);
            if ((st = mt_check_conditional_body(body))) {
                mt_dag_unref(body);
                body = NULL;
            }
        }
        break;
    default: break; /* GK_EMPTY; parse() let no other kind through */
    }
    if (st) return st;
    size_t deps[64], *dep_list = deps;
    if (n->num_deps > 64 && !(dep_list = malloc(n->num_deps * sizeof *dep_list))) {
        mt_op_release(&op);
        if (body) mt_dag_unref(body);
        return mt_oom();
    }
    for (uint32_t k = 0; k < n->num_deps; k++) dep_list[k] = a->deps[n->first_dep + k];
    size_t index;
    st = mt_dag_append(d, &op, body, dep_list, n->num_deps, args, num_args, &index);
    if (dep_list != deps) free(dep_list);
    return st;
}

/* The nodes of graph `graph` with the bindings at `base`; a body met twice is built once. */
static mtiart_status build_graph(const mt_artifact *a, void *const *base, size_t graph,
                                 mt_dag **memo, mt_dag **out) {
    if (memo[graph]) {
        mt_dag_ref(memo[graph]);
        *out = memo[graph];
        return MTIART_SUCCESS;
    }
    mt_dag *d = mt_dag_new();
    MT_CHECK_ALLOC(d);
    const gf_graph *g = &a->graphs[graph];
    /* mt_dag_append fills each node in */
    if (g->num_nodes && !(d->nodes = malloc(g->num_nodes * sizeof *d->nodes))) {
        mt_dag_unref(d);
        return mt_oom();
    }
    d->cap_nodes = g->num_nodes;
    mt_blocks_ref(a->blocks);
    d->blocks = a->blocks;
    for (uint32_t i = 0; i < g->num_nodes; i++) {
        mtiart_status st = build_node(a, base, memo, d, &a->nodes[g->first_node + i]);
        if (st) {
            mt_dag_unref(d);
            return st;
        }
    }
    mt_dag_ref(d);
    memo[graph] = d;
    *out = d;
    return MTIART_SUCCESS;
}

static mtiart_status build_dag(const mt_artifact *a, void *const *base, mt_dag **out) {
    mt_dag **memo = calloc(a->num_graphs, sizeof *memo);
    MT_CHECK_ALLOC(memo);
    mtiart_status st = build_graph(a, base, 0, memo, out);
    /* Marked once built: appending a body with placeholders is refused everywhere else. */
    bool placeholders = false;
    for (size_t i = 0; i < a->num_bindings; i++) placeholders |= !base[i];
    for (size_t i = 0; i < a->num_graphs; i++)
        if (memo[i]) {
            memo[i]->placeholders = placeholders;
            mt_dag_unref(memo[i]);
        }
    free(memo);
    return st;
}

/* The addresses of the bindings as a fresh executable has them: constants bound. */
static void **initial_bases(const mt_artifact *a) {
    void **base = calloc(a->num_bindings ? a->num_bindings : 1, sizeof *base);
    for (size_t i = 0; base && i < a->num_bindings; i++) base[i] = a->bindings[i].constant;
    return base;
}

static mtiart_status materialize(mt_artifact *a, mt_device *dev, const mtiart_load_options *o) {
    a->dev = dev;
    mtiart_status st = resolve_kernels(a, o);
    if (st) return st;
    for (size_t i = 0; i < a->num_events; i++)
        if (!(a->events[i] = mt_event_new(a->event_flags[i]))) return mt_oom();
    if ((st = mt_pool_acquire(dev, (mtiart_pool_id){0, 0}, &a->pool))) return st;
    a->blocks = calloc(1, sizeof *a->blocks + (a->num_regions + a->num_bindings) * sizeof(void *));
    MT_CHECK_ALLOC(a->blocks);
    atomic_init(&a->blocks->refcount, 1);
    for (size_t i = 0; i < a->num_regions; i++) {
        if (a->region_bytes[i] > dev->capacity)
            return mt_set_error(MTIART_ERROR_OUT_OF_MEMORY,
                                "region %zu of the graph needs %llu bytes; device %d has %llu", i,
                                (unsigned long long)a->region_bytes[i], dev->index,
                                (unsigned long long)dev->capacity);
        /* Not cleared: the graph's scratch memory starts as a fresh capture's does (and a
         * hostile size costs address space, not the time to touch it). */
        if ((st = mt_alloc(dev, dev->default_stream, a->pool, a->region_bytes[i], &a->regions[i])))
            return st;
        a->blocks->ptr[a->blocks->count++] = a->regions[i];
    }
    for (size_t i = 0; i < a->num_bindings; i++) {
        gf_binding *b = &a->bindings[i];
        if (b->flags != MTIART_BINDING_CONSTANT) continue;
        if ((st = mt_alloc(dev, dev->default_stream, NULL, b->bytes, &b->constant))) return st;
        a->blocks->ptr[a->blocks->count++] = b->constant;
        memcpy(b->constant, a->data + b->data_offset, b->bytes);
    }
    void **base = initial_bases(a);
    MT_CHECK_ALLOC(base);
    st = build_dag(a, base, &a->loaded);
    free(base);
    return st;
}

static mtiart_status load(const uint8_t *data, size_t size, int device,
                          const mtiart_load_options *options, mtiart_graph *graph) {
    LOOKUP_DEVICE(dev, device);
    MT_CHECK_NOT_NULL(graph);
    if (options && options->num_allowed_libraries && !options->allowed_libraries)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "allowed_libraries is NULL but num_allowed_libraries is %u",
                            options->num_allowed_libraries);
    if (options && options->flags & ~(uint32_t)(MTIART_LOAD_RESTRICT_LIBRARIES |
                                                MTIART_LOAD_BUILTIN_KERNELS_ONLY))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "unknown load flags 0x%x", options->flags);
    mt_artifact *a = NULL;
    mtiart_status st = parse(data, size, &a);
    if (st) return st;
    if ((st = materialize(a, dev, options))) {
        artifact_free(a);
        return st;
    }
    mt_graph *g = mt_graph_new(dev);
    if (!g) {
        artifact_free(a);
        return mt_oom();
    }
    mt_dag_unref(g->dag);
    mt_dag_ref(a->loaded);
    g->dag = a->loaded;
    mt_pool_retain(a->pool);
    g->pool = a->pool;
    g->artifact = a;
    return mt_graph_publish(g, graph);
}

MTIART_API mtiart_status mtiart_graph_load_memory(const void *data, size_t size, int device,
                                                  const mtiart_load_options *options,
                                                  mtiart_graph *graph) {
    MT_API_ENTRY();
    if (!data && size) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "data is NULL");
    return load(data, size, device, options, graph);
}

MTIART_API mtiart_status mtiart_graph_load(const char *path, int device,
                                           const mtiart_load_options *options,
                                           mtiart_graph *graph) {
    MT_API_ENTRY();
    MT_CHECK_NOT_NULL(path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "cannot open '%s': %s", path,
                            strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "'%s' is not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    uint8_t *data = malloc(size ? size : 1);
    if (!data) {
        close(fd);
        return mt_oom();
    }
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, data + got, size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    mtiart_status st = got == size ? load(data, size, device, options, graph)
                                   : mt_set_error(MTIART_ERROR_INVALID_VALUE,
                                                  "cannot read '%s': %s", path, strerror(errno));
    free(data);
    if (st) mt_error_context("'%s'", path);
    return st;
}

/* ================================================================== bindings */

/* Serialises binds (of any executable: they are rare): each builds the graph from its
 * bindings as they are, and two at once on one executable would each miss the other's. */
static pthread_mutex_t bind_lock = PTHREAD_MUTEX_INITIALIZER;

mtiart_status mt_bindings_new(const mt_graph *g, mt_bindings **out) {
    mt_artifact *a = g->artifact;
    *out = NULL;
    if (!a)
        return mt_set_error(MTIART_ERROR_NOT_SUPPORTED,
                            "the graph is a body of a loaded graph whose inputs or outputs are "
                            "not bound: instantiate the loaded graph and bind them");
    size_t unbound = 0;
    for (size_t i = 0; i < a->num_bindings; i++)
        unbound += a->bindings[i].flags != MTIART_BINDING_CONSTANT;
    if (!unbound) return MTIART_SUCCESS;
    if (g->dag != a->loaded)
        return mt_set_error(MTIART_ERROR_NOT_SUPPORTED,
                            "the graph was changed after it was loaded, so its inputs and "
                            "outputs can no longer be bound: instantiate it as loaded");
    mt_bindings *b = calloc(1, sizeof *b);
    MT_CHECK_ALLOC(b);
    if (!(b->base = initial_bases(a))) {
        free(b);
        return mt_oom();
    }
    atomic_fetch_add_explicit(&a->refcount, 1, memory_order_relaxed);
    b->art = a;
    atomic_init(&b->unbound, unbound);
    *out = b;
    return MTIART_SUCCESS;
}

void mt_bindings_free(mt_bindings *b) {
    mt_artifact_unref(b->art);
    free(b->base);
    free(b);
}

mtiart_status mt_bindings_check(const mt_bindings *b) {
    if (MT_LIKELY(atomic_load_explicit(&b->unbound, memory_order_acquire) == 0))
        return MTIART_SUCCESS;
    const mt_artifact *a = b->art;
    pthread_mutex_lock(&bind_lock); /* a bind may be filling base[] in */
    size_t i = 0;
    while (i < a->num_bindings && b->base[i]) i++;
    pthread_mutex_unlock(&bind_lock);
    if (i == a->num_bindings) return MTIART_SUCCESS; /* bound meanwhile */
    const gf_binding *unbound = &a->bindings[i];
    return mt_set_error(MTIART_ERROR_NOT_PERMITTED,
                        "%s '%s' (%llu bytes) of the loaded graph is not bound: call "
                        "mtiart_graph_exec_bind first",
                        unbound->flags == MTIART_BINDING_OUTPUT ? "output" : "input", unbound->name,
                        (unsigned long long)unbound->bytes);
}

/* The binding `name` of the executable (any binding when `constants`). */
static mtiart_status find_binding(mt_exec *x, const char *name, mt_bindings **set, size_t *index) {
    if (!name) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "name is NULL");
    mt_bindings *b = mt_exec_bindings(x);
    if (!b)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "the executable has no binding '%s' (it was not instantiated from a "
                            "loaded graph with inputs or outputs)",
                            name);
    const mt_artifact *a = b->art;
    for (size_t i = 0; i < a->num_bindings; i++)
        if (!strcmp(a->bindings[i].name, name)) {
            *set = b;
            *index = i;
            return MTIART_SUCCESS;
        }
    char names[256] = "";
    size_t len = 0;
    for (size_t i = 0; i < a->num_bindings && len < sizeof names; i++)
        len += (size_t)snprintf(names + len, sizeof names - len, "%s'%s'", i ? ", " : "",
                                a->bindings[i].name);
    return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                        "the loaded graph has no binding '%s' (its bindings: %s)", name, names);
}

MTIART_API mtiart_status mtiart_graph_exec_bind(mtiart_graph_exec exec, const char *name, void *ptr,
                                                size_t bytes) {
    MT_API_ENTRY();
    LOOKUP_EXEC(x, exec);
    mt_bindings *set;
    size_t i;
    mtiart_status st = find_binding(x, name, &set, &i);
    if (st) return st;
    const mt_artifact *a = set->art;
    const gf_binding *b = &a->bindings[i];
    if (b->flags == MTIART_BINDING_CONSTANT)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "'%s' is a constant of the file: it cannot be bound", name);
    if (!ptr) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "ptr is NULL");
    if (b->align && (uintptr_t)ptr % b->align)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "binding '%s' holds a condition of %u bytes: %p is not aligned to it",
                            name, b->align, ptr);
    if (bytes < b->bytes)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "binding '%s' needs %llu bytes; the buffer has %zu", name,
                            (unsigned long long)b->bytes, bytes);
    int device;
    bool is_device = mt_pointer_device_quiet(ptr, &device) == MTIART_SUCCESS;
    if (b->flags & GF_BINDING_HOST) {
        if (is_device)
            return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                                "binding '%s' is host memory (the host side of copies), but %p "
                                "is device memory",
                                name, ptr);
    } else if ((st = mt_check_buffers(
                    mt_exec_device(x),
                    &(mt_buffer){ptr, b->bytes, MTIART_ARG_BUFFER_INOUT, -1, "binding"}, 1, "graph",
                    NULL, 0))) {
        return mt_error_context("'%s'", name);
    }
    pthread_mutex_lock(&bind_lock);
    void *was = set->base[i];
    set->base[i] = ptr;
    mt_dag *dag;
    st = build_dag(a, set->base, &dag);
    if (st == MTIART_SUCCESS) {
        st = mt_exec_update_dag(x, dag, NULL, NULL, NULL);
        mt_dag_unref(dag);
    }
    if (st) set->base[i] = was;
    else if (!was) atomic_fetch_sub_explicit(&set->unbound, 1, memory_order_release);
    pthread_mutex_unlock(&bind_lock);
    return st;
}

MTIART_API mtiart_status mtiart_graph_exec_get_binding_size(mtiart_graph_exec exec,
                                                            const char *name, size_t *bytes) {
    MT_API_ENTRY();
    LOOKUP_EXEC(x, exec);
    MT_CHECK_NOT_NULL(bytes);
    mt_bindings *set;
    size_t i;
    mtiart_status st = find_binding(x, name, &set, &i);
    if (st) return st;
    *bytes = (size_t)set->art->bindings[i].bytes;
    return MTIART_SUCCESS;
}

/* A lookup in constant tables: it sets no error and takes no lock, so it needs no public-call
 * scope and is safe in a forked child. */
MTIART_API const char *mtiart_builtin_kernel_name(uint32_t id) {
    return mt_builtin_kernel_name(mt_builtin_kernel_by_id(id));
}
