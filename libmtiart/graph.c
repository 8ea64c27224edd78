/* Graphs: the captured (or hand-built) DAG of operations, its nodes shared copy-on-write,
 * explicit construction of every node kind, introspection and the DOT dump. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>

mt_dag *mt_dag_new(void) {
    mt_dag *d = calloc(1, sizeof *d);
    if (d) atomic_init(&d->refcount, 1);
    return d;
}

__thread const mt_launch_note *mt_current_launch __attribute__((tls_model("initial-exec")));

static void free_buffer_meta(mt_buffer_meta *meta, uint32_t count) {
    if (!meta) return;
    for (uint32_t b = 0; b < count; b++) free(meta[b].name);
    free(meta);
}

static void node_release(mt_node *n) {
    mt_op_release(&n->op);
    free_buffer_meta(n->buffer_meta, n->num_buffers);
    free(n->buffers);
    if (n->body) mt_dag_unref(n->body);
}

typedef struct mt_dep_chunk {
    struct mt_dep_chunk *next;
    size_t used, cap;
    size_t deps[];
} mt_dep_chunk;

/* Chunks double up to this many dependencies: a large graph makes few of them, a small
 * one wastes little. */
#define DEP_CHUNK_MIN 64
#define DEP_CHUNK_MAX 65536

/* Room for `count` dependencies in d's chunks, taken by dep_take. NULL when out of host
 * memory. */
static size_t *dep_room(mt_dag *d, size_t count) {
    mt_dep_chunk *c = d->dep_chunks;
    if (MT_LIKELY(c && c->cap - c->used >= count)) return c->deps + c->used;
    if (count > (SIZE_MAX - sizeof *c) / sizeof(size_t)) return NULL;
    size_t cap = c ? (c->cap < DEP_CHUNK_MAX ? c->cap * 2 : c->cap) : DEP_CHUNK_MIN;
    if (cap < count) cap = count;
    mt_dep_chunk *fresh = malloc(sizeof *fresh + cap * sizeof(size_t));
    if (!fresh) return NULL;
    fresh->next = c;
    fresh->used = 0;
    fresh->cap = cap;
    d->dep_chunks = fresh;
    return fresh->deps;
}

static void dep_take(mt_dag *d, size_t count) { d->dep_chunks->used += count; }

static void free_dep_chunks(mt_dag *d) {
    for (mt_dep_chunk *c = d->dep_chunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
}

/* A copy of `from`'s metadata into `to` (whose buffers are copied already). */
static bool copy_node_meta(mt_node *to, const mt_node *from) {
    to->stream_id = from->stream_id;
    if (!from->buffer_meta) return true;
    if (!(to->buffer_meta = calloc(from->num_buffers, sizeof *to->buffer_meta))) return false;
    for (uint32_t b = 0; b < from->num_buffers; b++) {
        to->buffer_meta[b] = from->buffer_meta[b];
        to->buffer_meta[b].name = NULL;
        if (from->buffer_meta[b].name &&
            !(to->buffer_meta[b].name = strdup(from->buffer_meta[b].name)))
            return false;
    }
    return true;
}

void mt_dag_unref(mt_dag *d) {
    if (atomic_fetch_sub_explicit(&d->refcount, 1, memory_order_acq_rel) != 1) return;
    for (size_t i = 0; i < d->num_nodes; i++) node_release(&d->nodes[i]);
    if (d->blocks) mt_blocks_unref(d->blocks);
    free_dep_chunks(d);
    free(d->nodes);
    free(d);
}

mt_dag *mt_dag_clone(const mt_dag *d) { return mt_dag_clone_prefix(d, d->num_nodes); }

mt_dag *mt_dag_clone_prefix(const mt_dag *d, size_t count) {
    mt_dag *c = mt_dag_new();
    if (!c) return NULL;
    c->nodes = calloc(count ? count : 1, sizeof *c->nodes);
    if (!c->nodes) {
        free(c);
        return NULL;
    }
    c->cap_nodes = count ? count : 1;
    for (size_t i = 0; i < count; i++) {
        const mt_node *from = &d->nodes[i];
        mt_node *to = &c->nodes[i];
        if (mt_op_clone(&to->op, &from->op) != MTIART_SUCCESS) goto oom;
        c->num_nodes = i + 1; /* from here on the node is released with the copy */
        if (from->num_buffers && !(to->buffers = malloc(from->num_buffers * sizeof *to->buffers)))
            goto oom;
        if (from->num_deps && !(to->deps = dep_room(c, from->num_deps))) goto oom;
        if (from->num_buffers)
            memcpy(to->buffers, from->buffers, from->num_buffers * sizeof *to->buffers);
        if (from->num_deps) {
            memcpy(to->deps, from->deps, from->num_deps * sizeof *to->deps);
            dep_take(c, from->num_deps);
        }
        to->num_buffers = from->num_buffers;
        to->num_deps = from->num_deps;
        if ((to->body = from->body)) mt_dag_ref(to->body);
        if (!copy_node_meta(to, from)) goto oom;
        c->num_edges += from->num_deps;
    }
    c->depth = d->depth;
    if ((c->blocks = d->blocks)) mt_blocks_ref(c->blocks);
    c->placeholders = d->placeholders;
    return c;
oom:
    mt_dag_unref(c);
    return NULL;
}

mt_graph *mt_graph_new(mt_device *dev) {
    mt_graph *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    if (!(g->dag = mt_dag_new())) {
        free(g);
        return NULL;
    }
    g->dev = dev;
    pthread_mutex_init(&g->lock, NULL);
    return g;
}

static void release_graph(void *g) { mt_graph_free(g); }

mtiart_status mt_graph_publish(mt_graph *g, mtiart_graph *handle) {
    mtiart_status st = mt_handle_register(g, MT_KIND_GRAPH, release_graph, &g->handle);
    if (st == MTIART_SUCCESS) *handle = (mtiart_graph)(uintptr_t)g->handle;
    return st;
}

void mt_graph_free(mt_graph *g) {
    if (g->pool_order) mt_pool_order_hold(g->pool_order, g->pool_seq, -1);
    mt_dag_unref(g->dag);
    if (g->artifact) mt_artifact_unref(g->artifact);
    mt_graph_mem_free(g->mem);
    mt_replay_order_unref(g->order);
    if (g->pool) mt_pool_release(g->pool);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

mtiart_status mt_graph_own(mt_graph *g) {
    if (atomic_load_explicit(&g->dag->refcount, memory_order_acquire) == 1) return MTIART_SUCCESS;
    mt_dag *copy = mt_dag_clone(g->dag);
    MT_CHECK_ALLOC(copy);
    mt_dag_unref(g->dag);
    g->dag = copy;
    return MTIART_SUCCESS;
}

/* The node's copy of its buffers' list (NULL for none). `reserved` keeps a kernel
 * argument's index (for saving the graph); the public accessor clears it. */
static mtiart_buffer_use *node_buffers(const mt_buffer *bufs, uint32_t n) {
    if (!n) return NULL;
    mtiart_buffer_use *out = malloc(n * sizeof *out);
    for (uint32_t i = 0; out && i < n; i++)
        out[i] = (mtiart_buffer_use){(uint64_t)(uintptr_t)bufs[i].ptr, bufs[i].bytes,
                                     bufs[i].access, bufs[i].arg >= 0 ? (uint32_t)bufs[i].arg : 0};
    return out;
}

/* What the node's buffers hold: the launcher's tensor descriptions (a kernel launched with
 * mtiart_launch_kernel_described on this thread) and the names of their allocations. NULL
 * when nothing is known. */
static mt_buffer_meta *buffer_meta_of(const mt_op *op, const mtiart_arg *args, uint32_t num_args,
                                      const mtiart_buffer_use *buffers, uint32_t num_buffers,
                                      bool *oom) {
    if (!num_buffers) return NULL; /* before the thread-local look-up, which costs a call */
    const mt_launch_note *note = op->type == MT_OP_KERNEL ? mt_current_launch : NULL;
    bool named = atomic_load_explicit(&mt_memory_notes, memory_order_relaxed) != 0;
    if (!named && !(note && note->tensors)) return NULL;
    mt_buffer_meta *meta = calloc(num_buffers, sizeof *meta);
    if (!meta) {
        *oom = true;
        return NULL;
    }
    bool any = false;
    for (uint32_t b = 0; b < num_buffers; b++) {
        meta[b].dtype = -1;
        if (named && (meta[b].name = mt_memory_name_of((void *)(uintptr_t)buffers[b].address)))
            any = true;
    }
    /* Buffer b of a kernel node is its b-th buffer argument. */
    for (uint32_t i = 0, b = 0; note && note->tensors && i < num_args && b < num_buffers; i++) {
        if (args[i].kind == MTIART_ARG_VALUE) continue;
        const mtiart_tensor_desc *t = i < note->num_tensors ? note->tensors[i] : NULL;
        if (t && t->ndim >= 0 && t->ndim <= MTIART_MAX_DIMS) {
            meta[b].dtype = t->dtype;
            meta[b].ndim = t->ndim;
            memcpy(meta[b].shape, t->shape, (size_t)t->ndim * sizeof t->shape[0]);
            any = true;
        }
        b++;
    }
    if (!any) {
        free_buffer_meta(meta, num_buffers);
        return NULL;
    }
    return meta;
}

/* Append a node to `d` with the op's buffers listed (`bufs`, from `args` for a kernel): the
 * op and body are moved in (the dag owns the op's blob and references and the body
 * reference) or released on failure. A body nested deeper than MT_MAX_NESTING is refused. */
static mtiart_status dag_append(mt_dag *d, mt_op *op, mt_dag *body, const size_t *deps,
                                size_t num_deps, const mtiart_arg *args, uint32_t num_args,
                                const mt_buffer *bufs, uint32_t num_buffers, size_t *index) {
    mtiart_status st = MTIART_SUCCESS;
    if (body && body->placeholders) {
        st = mt_set_error(MTIART_ERROR_INVALID_VALUE,
                          "the body is a loaded graph whose inputs or outputs are not bound; "
                          "bind them on an executable of it instead");
        goto fail;
    }
    if (body && body->depth + 1 > MT_MAX_NESTING) {
        st = mt_set_error(MTIART_ERROR_INVALID_VALUE,
                          "child and conditional bodies nest at most %d deep", MT_MAX_NESTING);
        goto fail;
    }
    for (size_t i = 0; i < num_deps; i++)
        if (deps[i] >= d->num_nodes) {
            st = mt_set_error(MTIART_ERROR_INVALID_VALUE,
                              "dependency %zu names node %zu, but the graph has %zu nodes", i,
                              deps[i], d->num_nodes);
            goto fail;
        }
    if (d->num_nodes == d->cap_nodes) {
        size_t cap = d->cap_nodes ? d->cap_nodes * 2 : 16;
        mt_node *grown = realloc(d->nodes, cap * sizeof *grown);
        if (!grown) goto oom;
        d->nodes = grown;
        d->cap_nodes = cap;
    }
    mt_node *n = &d->nodes[d->num_nodes];
    size_t *dep_list = NULL;
    if (num_deps && !(dep_list = dep_room(d, num_deps))) goto oom;
    mtiart_buffer_use *buffers = NULL;
    if (num_buffers && !(buffers = node_buffers(bufs, num_buffers))) goto oom;
    /* Duplicate dependencies (a join of two frontiers can repeat a node) are dropped. */
    uint32_t kept = 0;
    for (size_t i = 0; i < num_deps; i++) {
        bool seen = false;
        for (uint32_t k = 0; k < kept && !seen; k++) seen = dep_list[k] == deps[i];
        if (!seen) dep_list[kept++] = deps[i];
    }
    bool oom = false;
    mt_buffer_meta *meta = buffer_meta_of(op, args, num_args, buffers, num_buffers, &oom);
    if (oom) {
        free(buffers);
        goto oom;
    }
    if (kept) dep_take(d, kept);
    n->buffers = buffers;
    n->num_buffers = num_buffers;
    n->num_deps = kept;
    n->deps = kept ? dep_list : NULL;
    n->stream_id = 0;
    n->buffer_meta = meta;
    n->op = *op; /* the dag now owns the op's blob and references, and the body */
    n->body = body;
    if (body && body->depth + 1 > d->depth) d->depth = body->depth + 1;
    d->num_edges += n->num_deps;
    *index = d->num_nodes++;
    return MTIART_SUCCESS;
oom:
    st = mt_oom();
fail:
    mt_op_release(op);
    if (body) mt_dag_unref(body);
    return st;
}

mtiart_status mt_graph_append(mt_graph *g, mt_dag *d, mt_op *op, mt_dag *body,
                              const mt_graph_mem *body_mem, size_t mem_node, const size_t *deps,
                              size_t num_deps, const mtiart_arg *args, uint32_t num_args,
                              size_t *index) {
    mt_buffer bufs[MT_MAX_ARGS];
    uint32_t n = mt_op_buffers(op, args, num_args, bufs);
    bool recorded = mem_node == MT_BUFFERS_RECORDED;
    if (mem_node == SIZE_MAX || recorded) mem_node = d->num_nodes;
    mtiart_status st = MTIART_SUCCESS;
    if ((n || body_mem) && !g->mem && !(g->mem = mt_graph_mem_new(g->dev, g->pool, 0)))
        st = mt_oom();
    /* The one lookup of each buffer: checked, and held for the graph's lifetime; a body's
     * memory is held as the body's own record says (its blocks may be freed already). */
    if (st == MTIART_SUCCESS && n && !recorded)
        st = mt_check_buffers(g->dev, bufs, n, "graph", g->mem, mem_node);
    if (st == MTIART_SUCCESS && body_mem) st = mt_graph_mem_merge(g->mem, body_mem, mem_node);
    if (st) {
        mt_op_release(op);
        if (body) mt_dag_unref(body);
        return st;
    }
    return dag_append(d, op, body, deps, num_deps, args, num_args, bufs, n, index);
}

mtiart_status mt_dag_append(mt_dag *d, mt_op *op, mt_dag *body, const size_t *deps, size_t num_deps,
                            const mtiart_arg *args, uint32_t num_args, size_t *index) {
    mt_buffer bufs[MT_MAX_ARGS];
    uint32_t n = mt_op_buffers(op, args, num_args, bufs);
    return dag_append(d, op, body, deps, num_deps, args, num_args, bufs, n, index);
}

bool mt_dag_has_mem_nodes(const mt_dag *d) {
    for (size_t i = 0; i < d->num_nodes; i++)
        if (d->nodes[i].op.type == MT_OP_MEM_ALLOC || d->nodes[i].op.type == MT_OP_MEM_FREE)
            return true;
    return false;
}

/* The first node of `d` (or of a graph inside it) that records or waits for an event, or
 * SIZE_MAX. */
static size_t find_event_node(const mt_dag *d) {
    for (size_t i = 0; i < d->num_nodes; i++) {
        const mt_node *n = &d->nodes[i];
        if (n->op.type == MT_OP_EVENT_RECORD || n->op.type == MT_OP_EVENT_WAIT ||
            (n->body && find_event_node(n->body) != SIZE_MAX))
            return i;
    }
    return SIZE_MAX;
}

mtiart_status mt_check_conditional_body(const mt_dag *body) {
    size_t bad = find_event_node(body);
    if (bad == SIZE_MAX) return MTIART_SUCCESS;
    return mt_set_error(MTIART_ERROR_NOT_SUPPORTED,
                        "node %zu of the graph records or waits for an event, which a "
                        "conditional body cannot do (it runs a number of times known only at "
                        "run time)",
                        bad);
}

/* ------------------------------------------------------------------ public API */

MTIART_API mtiart_status mtiart_graph_create(int device, mtiart_graph *graph) {
    MT_API_ENTRY();
    LOOKUP_DEVICE(dev, device);
    MT_CHECK_NOT_NULL(graph);
    mt_graph *g = mt_graph_new(dev);
    MT_CHECK_ALLOC(g);
    return mt_graph_publish(g, graph);
}

MTIART_API mtiart_status mtiart_graph_destroy(mtiart_graph graph) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    if (!mt_handle_retire(&g_pin))
        return mt_set_error(MTIART_ERROR_INVALID_HANDLE, "graph destroyed concurrently");
    return MTIART_SUCCESS; /* freed when the last call using it returns */
}

static mtiart_status check_add_args(const size_t *dependencies, size_t num_dependencies,
                                    const size_t *node) {
    if (!node || (num_dependencies && !dependencies))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "NULL output or dependency list");
    return MTIART_SUCCESS;
}

/* Append a packed op (and body) to a graph the caller has locked: the one way every
 * add_*_node function ends. The op and body are moved in, or released on failure. */
static mtiart_status add_node(mt_graph *g, mt_op *op, mt_dag *body, const mt_graph_mem *body_mem,
                              const size_t *dependencies, size_t num_dependencies,
                              const mtiart_arg *args, uint32_t num_args, size_t *node) {
    mtiart_status st = check_add_args(dependencies, num_dependencies, node);
    if (st == MTIART_SUCCESS) st = mt_graph_own(g);
    if (st) {
        mt_op_release(op);
        if (body) mt_dag_unref(body);
        return st;
    }
    return mt_graph_append(g, g->dag, op, body, body_mem, SIZE_MAX, dependencies, num_dependencies,
                           args, num_args, node);
}

MTIART_API mtiart_status mtiart_graph_add_kernel_node(mtiart_graph graph,
                                                      const size_t *dependencies,
                                                      size_t num_dependencies,
                                                      mtiart_kernel_fn kernel, uint32_t num_blocks,
                                                      const mtiart_arg *args, uint32_t num_args,
                                                      size_t *node) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    mt_op op;
    mtiart_status st = mt_op_pack_kernel(&op, kernel, num_blocks, args, num_args);
    if (st) return st;
    return add_node(g, &op, NULL, NULL, dependencies, num_dependencies, args, num_args, node);
}

MTIART_API mtiart_status mtiart_graph_add_empty_node(mtiart_graph graph, const size_t *dependencies,
                                                     size_t num_dependencies, size_t *node) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    mt_op op = {.type = MT_OP_EMPTY, .num_blocks = 1};
    return add_node(g, &op, NULL, NULL, dependencies, num_dependencies, NULL, 0, node);
}

MTIART_API mtiart_status mtiart_graph_add_memcpy_node(mtiart_graph graph,
                                                      const size_t *dependencies,
                                                      size_t num_dependencies, void *dst,
                                                      const void *src, size_t bytes,
                                                      mtiart_memcpy_kind kind, size_t *node) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    mt_op op;
    mtiart_status st = mt_op_pack_memcpy(&op, dst, src, bytes, kind);
    if (st) return st;
    return add_node(g, &op, NULL, NULL, dependencies, num_dependencies, NULL, 0, node);
}

MTIART_API mtiart_status mtiart_graph_add_fill_node(mtiart_graph graph, const size_t *dependencies,
                                                    size_t num_dependencies, void *dst,
                                                    const void *pattern, uint32_t pattern_size,
                                                    size_t count, size_t *node) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    mt_op op;
    mtiart_status st = mt_op_pack_fill(&op, dst, pattern, pattern_size, count);
    if (st) return st;
    return add_node(g, &op, NULL, NULL, dependencies, num_dependencies, NULL, 0, node);
}

MTIART_API mtiart_status mtiart_graph_add_host_node(mtiart_graph graph, const size_t *dependencies,
                                                    size_t num_dependencies, mtiart_host_fn fn,
                                                    void *user_data, size_t *node) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    if (!fn) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "host function is NULL");
    mt_op op = {.type = MT_OP_HOST, .num_blocks = 1};
    op.fn.host = fn;
    op.u.host.user_data = user_data;
    return add_node(g, &op, NULL, NULL, dependencies, num_dependencies, NULL, 0, node);
}

static mtiart_status add_event_node(mtiart_graph graph, const size_t *dependencies,
                                    size_t num_dependencies, mtiart_event event, uint32_t type,
                                    size_t *node) {
    LOOKUP_GRAPH(g, graph);
    LOOKUP_EVENT(e, event);
    LOCK_GRAPH(g);
    mt_op op = {.type = type, .num_blocks = 1};
    mt_event_ref(e);
    op.u.event.event = e;
    return add_node(g, &op, NULL, NULL, dependencies, num_dependencies, NULL, 0, node);
}

MTIART_API mtiart_status mtiart_graph_add_event_record_node(mtiart_graph graph,
                                                            const size_t *dependencies,
                                                            size_t num_dependencies,
                                                            mtiart_event event, size_t *node) {
    MT_API_ENTRY();
    return add_event_node(graph, dependencies, num_dependencies, event, MT_OP_EVENT_RECORD, node);
}

MTIART_API mtiart_status mtiart_graph_add_event_wait_node(mtiart_graph graph,
                                                          const size_t *dependencies,
                                                          size_t num_dependencies,
                                                          mtiart_event event, size_t *node) {
    MT_API_ENTRY();
    return add_event_node(graph, dependencies, num_dependencies, event, MT_OP_EVENT_WAIT, node);
}

/* A reference to the nodes of `body_graph` as they are now (the node's copy: later changes
 * to that graph give it a dag of its own), and a copy of its memory record (*mem, NULL if
 * none; mt_graph_mem_free it), which the graph taking the body holds from then on. Taken
 * under its lock alone, so that adding two graphs to each other on two threads cannot
 * deadlock. */
static mtiart_status body_of(mtiart_graph body_graph, const mt_graph *into, mt_dag **body,
                             mt_graph_mem **mem) {
    LOOKUP_GRAPH(b, body_graph);
    LOCK_GRAPH(b);
    if (b->dev != into->dev)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "the body graph belongs to device %d, the graph to device %d",
                            b->dev->index, into->dev->index);
    if (mt_dag_has_mem_nodes(b->dag))
        return mt_set_error(MTIART_ERROR_NOT_SUPPORTED,
                            "the body graph has memory nodes, which a child or conditional "
                            "body cannot have");
    *mem = NULL;
    if (b->mem && !(*mem = mt_graph_mem_copy(b->mem, false))) return MTIART_ERROR_OUT_OF_MEMORY;
    mt_dag_ref(b->dag);
    *body = b->dag;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_graph_add_child_graph_node(mtiart_graph graph,
                                                           const size_t *dependencies,
                                                           size_t num_dependencies,
                                                           mtiart_graph child, size_t *node) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    mt_dag *body;
    mt_graph_mem *mem;
    mtiart_status st = body_of(child, g, &body, &mem);
    if (st) return st;
    LOCK_GRAPH(g);
    mt_op op = {.type = MT_OP_CHILD, .num_blocks = 1};
    st = add_node(g, &op, body, mem, dependencies, num_dependencies, NULL, 0, node);
    mt_graph_mem_free(mem);
    return st;
}

MTIART_API mtiart_status mtiart_graph_add_conditional_node(
    mtiart_graph graph, const size_t *dependencies, size_t num_dependencies,
    mtiart_conditional_type type, const void *condition, uint32_t condition_size, mtiart_graph body,
    size_t *node) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    mt_op op;
    mt_dag *b;
    mt_graph_mem *mem;
    mtiart_status st =
        mt_op_pack_conditional(&op, g->dev, "graph", type, condition, condition_size);
    if (st || (st = body_of(body, g, &b, &mem))) return st;
    if ((st = mt_check_conditional_body(b))) {
        mt_dag_unref(b);
        mt_graph_mem_free(mem);
        return st;
    }
    LOCK_GRAPH(g);
    st = add_node(g, &op, b, mem, dependencies, num_dependencies, NULL, 0, node);
    mt_graph_mem_free(mem);
    return st;
}

static mtiart_status check_node(const mt_graph *g, size_t node) {
    if (node >= g->dag->num_nodes)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "node %zu out of range (%zu nodes)", node,
                            g->dag->num_nodes);
    return MTIART_SUCCESS;
}

mtiart_status mt_node_set_kernel_args(mt_node *n, const mtiart_arg *args, uint32_t num_args,
                                      mt_device *dev, mt_graph_mem *record, size_t index) {
    mt_op op;
    mtiart_status st = mt_op_pack_kernel(&op, n->op.fn.kernel, n->op.num_blocks, args, num_args);
    if (st) return st;
    mt_buffer bufs[MT_MAX_ARGS];
    uint32_t num_buffers = mt_op_buffers(&op, args, num_args, bufs);
    op.u.kernel.label = n->op.u.kernel.label; /* the same launch, with other arguments */
    mtiart_buffer_use *buffers = NULL;
    if ((num_buffers && dev &&
         (st = mt_check_buffers(dev, bufs, num_buffers, "graph", record, index))) ||
        (num_buffers && !(buffers = node_buffers(bufs, num_buffers)))) {
        mt_op_release(&op);
        return st ? st : mt_oom();
    }
    /* The arguments changed: what was known of the old ones no longer holds. */
    free_buffer_meta(n->buffer_meta, n->num_buffers);
    n->buffer_meta = NULL;
    n->num_buffers = num_buffers;
    free(n->buffers);
    n->buffers = buffers;
    mt_op_release(&n->op);
    n->op = op;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_graph_kernel_node_set_args(mtiart_graph graph, size_t node,
                                                           const mtiart_arg *args,
                                                           uint32_t num_args) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    mtiart_status st = check_node(g, node);
    if (st) return st;
    if (g->dag->nodes[node].op.type != MT_OP_KERNEL)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "node %zu is not a kernel node", node);
    if ((st = mt_graph_own(g))) return st;
    if (!g->mem && !(g->mem = mt_graph_mem_new(g->dev, g->pool, 0))) return mt_oom();
    mt_graph_mem_forget_reads(g->mem, node);
    return mt_node_set_kernel_args(&g->dag->nodes[node], args, num_args, g->dev, g->mem, node);
}

MTIART_API mtiart_status mtiart_graph_add_mem_alloc_node(mtiart_graph graph,
                                                         const size_t *dependencies,
                                                         size_t num_dependencies, size_t bytes,
                                                         size_t *node, void **ptr) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    mtiart_status st = check_add_args(dependencies, num_dependencies, node);
    if (st) return st;
    MT_CHECK_NOT_NULL(ptr);
    mt_op op = {.type = MT_OP_MEM_ALLOC, .num_blocks = 1};
    void *address;
    st = mt_graph_alloc_new(g->dev, g->dev->default_stream, g->pool, bytes, &op.u.mem.alloc,
                            &address);
    if (st) return st;
    st = add_node(g, &op, NULL, NULL, dependencies, num_dependencies, NULL, 0, node);
    if (st == MTIART_SUCCESS) *ptr = address;
    return st;
}

mtiart_status mt_graph_append_mem_free(mt_graph *g, mt_graph_alloc *alloc, const size_t *deps,
                                       size_t num_deps, size_t *index) {
    mt_op op = {.type = MT_OP_MEM_FREE, .num_blocks = 1};
    op.u.mem.alloc = alloc;
    const mt_dag *d = g->dag;
    for (size_t i = 0; i < d->num_nodes; i++)
        if (d->nodes[i].op.type == MT_OP_MEM_FREE && d->nodes[i].op.u.mem.alloc == alloc) {
            mt_op_release(&op);
            return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                                "the allocation is freed already, by node %zu of the graph", i);
        }
    mtiart_status st = mt_graph_own(g);
    if (st) {
        mt_op_release(&op);
        return st;
    }
    return mt_graph_append(g, g->dag, &op, NULL, NULL, SIZE_MAX, deps, num_deps, NULL, 0, index);
}

MTIART_API mtiart_status mtiart_graph_add_mem_free_node(mtiart_graph graph,
                                                        const size_t *dependencies,
                                                        size_t num_dependencies, void *ptr,
                                                        size_t *node) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    mtiart_status st = check_add_args(dependencies, num_dependencies, node);
    if (st) return st;
    mt_graph_alloc *alloc = mt_graph_alloc_find(g->dev, ptr);
    if (!alloc)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "%p is not the start of a graph allocation (one a memory alloc "
                            "node made on device %d)",
                            ptr, g->dev->index);
    return mt_graph_append_mem_free(g, alloc, dependencies, num_dependencies, node);
}

static mtiart_status refuse_clone_of_mem_nodes(void) {
    return mt_set_error(MTIART_ERROR_NOT_SUPPORTED,
                        "the graph has memory nodes: a graph with memory nodes cannot be "
                        "cloned (its allocations' addresses are its own)");
}

MTIART_API mtiart_status mtiart_graph_clone(mtiart_graph graph, mtiart_graph *clone) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    MT_CHECK_NOT_NULL(clone);
    if (mt_dag_has_mem_nodes(g->dag)) return refuse_clone_of_mem_nodes();
    mt_graph *c = mt_graph_new(g->dev);
    MT_CHECK_ALLOC(c);
    /* The clone holds what it uses, as any graph does, for as long as it lives. */
    if (g->mem && !(c->mem = mt_graph_mem_copy(g->mem, false))) {
        mt_graph_free(c);
        return MTIART_ERROR_OUT_OF_MEMORY;
    }
    /* The nodes are shared until either graph changes (copy-on-write). */
    mt_dag_unref(c->dag);
    mt_dag_ref(g->dag);
    c->dag = g->dag;
    if (g->pool) {
        mt_pool_retain(g->pool);
        c->pool = g->pool;
    }
    return mt_graph_publish(c, clone);
}

MTIART_API mtiart_status mtiart_graph_clone_prefix(mtiart_graph graph, size_t count,
                                                   mtiart_graph *clone) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    MT_CHECK_NOT_NULL(clone);
    if (count > g->dag->num_nodes)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "count %zu exceeds the graph's %zu nodes",
                            count, g->dag->num_nodes);
    if (mt_dag_has_mem_nodes(g->dag)) return refuse_clone_of_mem_nodes();
    mt_graph *c = mt_graph_new(g->dev);
    MT_CHECK_ALLOC(c);
    mt_dag *prefix = mt_dag_clone_prefix(g->dag, count);
    if (prefix) {
        mt_dag_unref(c->dag);
        c->dag = prefix;
    }
    /* The input record names nodes of the whole graph: the prefix keeps only the holds. */
    if (!prefix || (g->mem && !(c->mem = mt_graph_mem_holds_of(g->mem)))) {
        mt_graph_free(c);
        return mt_oom();
    }
    if (g->pool) {
        mt_pool_retain(g->pool);
        c->pool = g->pool;
    }
    return mt_graph_publish(c, clone);
}

MTIART_API mtiart_status mtiart_graph_get_device(mtiart_graph graph, int *device) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    MT_CHECK_NOT_NULL(device);
    *device = g->dev->index;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_graph_get_node_count(mtiart_graph graph, size_t *count) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    MT_CHECK_NOT_NULL(count);
    *count = g->dag->num_nodes;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_graph_get_edge_count(mtiart_graph graph, size_t *count) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    MT_CHECK_NOT_NULL(count);
    *count = g->dag->num_edges;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_graph_get_pool(mtiart_graph graph, mtiart_pool_id *pool) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    MT_CHECK_NOT_NULL(pool);
    *pool = g->pool ? mt_pool_id_of(g->pool) : (mtiart_pool_id){0, 0};
    return MTIART_SUCCESS;
}

static const char *conditional_name(uint32_t kind) {
    return kind == MTIART_CONDITIONAL_WHILE ? "WHILE" : "IF";
}

void mt_node_name(const mt_node *n, char *out, size_t cap) {
    static const char *copy_kinds[] = {"HtoH", "HtoD", "DtoH", "DtoD"};
    switch (n->op.type) {
    case MT_OP_KERNEL: mt_kernel_name(n->op.fn.kernel, out, cap); break;
    case MT_OP_MEMCPY: snprintf(out, cap, "memcpy %s", copy_kinds[n->op.u.copy.kind & 3]); break;
    case MT_OP_FILL: snprintf(out, cap, "fill x%u", n->op.u.fill.size); break;
    case MT_OP_HOST: snprintf(out, cap, "host function"); break;
    case MT_OP_EVENT_RECORD: snprintf(out, cap, "event record"); break;
    case MT_OP_EVENT_WAIT: snprintf(out, cap, "event wait"); break;
    case MT_OP_CHILD: snprintf(out, cap, "child graph (%zu nodes)", n->body->num_nodes); break;
    case MT_OP_CONDITIONAL:
        snprintf(out, cap, "conditional %s (%zu nodes)", conditional_name(n->op.u.cond.kind),
                 n->body->num_nodes);
        break;
    case MT_OP_MEM_ALLOC: snprintf(out, cap, "mem alloc"); break;
    case MT_OP_MEM_FREE: snprintf(out, cap, "mem free"); break;
    default: snprintf(out, cap, "empty"); break;
    }
}

static mtiart_node_kind node_kind(const mt_node *n) {
    switch (n->op.type) {
    case MT_OP_KERNEL: return MTIART_NODE_KERNEL;
    case MT_OP_MEMCPY: return MTIART_NODE_MEMCPY;
    case MT_OP_FILL: return MTIART_NODE_FILL;
    case MT_OP_HOST: return MTIART_NODE_HOST;
    case MT_OP_EVENT_RECORD: return MTIART_NODE_EVENT_RECORD;
    case MT_OP_EVENT_WAIT: return MTIART_NODE_EVENT_WAIT;
    case MT_OP_CHILD: return MTIART_NODE_CHILD_GRAPH;
    case MT_OP_CONDITIONAL: return MTIART_NODE_CONDITIONAL;
    case MT_OP_MEM_ALLOC: return MTIART_NODE_MEM_ALLOC;
    case MT_OP_MEM_FREE: return MTIART_NODE_MEM_FREE;
    default: return MTIART_NODE_EMPTY;
    }
}

MTIART_API mtiart_status mtiart_graph_get_node_info(mtiart_graph graph, size_t node,
                                                    mtiart_node_info *info) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    mtiart_status st = check_node(g, node);
    if (st) return st;
    MT_CHECK_NOT_NULL(info);
    const mt_node *n = &g->dag->nodes[node];
    memset(info, 0, sizeof *info);
    info->kind = node_kind(n);
    info->num_blocks = n->op.num_blocks;
    info->num_buffers = n->num_buffers;
    info->num_dependencies = n->num_deps;
    mt_node_name(n, info->name, sizeof info->name);
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_graph_get_node_buffer(mtiart_graph graph, size_t node,
                                                      uint32_t index, mtiart_buffer_use *use) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    mtiart_status st = check_node(g, node);
    if (st) return st;
    MT_CHECK_NOT_NULL(use);
    if (index >= g->dag->nodes[node].num_buffers)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "node %zu has %u buffers", node,
                            g->dag->nodes[node].num_buffers);
    *use = g->dag->nodes[node].buffers[index];
    use->reserved = 0;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_graph_get_node_dependency(mtiart_graph graph, size_t node,
                                                          uint32_t index, size_t *dependency) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    mtiart_status st = check_node(g, node);
    if (st) return st;
    MT_CHECK_NOT_NULL(dependency);
    if (index >= g->dag->nodes[node].num_deps)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "node %zu has %u dependencies", node,
                            g->dag->nodes[node].num_deps);
    *dependency = g->dag->nodes[node].deps[index];
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_graph_get_node_body(mtiart_graph graph, size_t node,
                                                    mtiart_graph *body) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    mtiart_status st = check_node(g, node);
    if (st) return st;
    MT_CHECK_NOT_NULL(body);
    const mt_node *n = &g->dag->nodes[node];
    if (!n->body)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "node %zu is not a child graph or conditional node", node);
    mt_graph *copy = mt_graph_new(g->dev);
    MT_CHECK_ALLOC(copy);
    /* It holds what the graph holds (a superset of what the body uses), as holds only: a
     * check of its inputs would name the graph's nodes. */
    if (g->mem && !(copy->mem = mt_graph_mem_holds_of(g->mem))) {
        mt_graph_free(copy);
        return MTIART_ERROR_OUT_OF_MEMORY;
    }
    mt_dag_unref(copy->dag);
    mt_dag_ref(n->body);
    copy->dag = n->body;
    return mt_graph_publish(copy, body);
}

/* Appends to a bounded buffer while counting the full length. */
typedef struct text_out {
    char *buf;
    size_t cap, len;
} text_out;

static void emit(text_out *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(text_out *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = t->len < t->cap ? t->cap - t->len : 0;
    int n = vsnprintf(room ? t->buf + t->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) t->len += (size_t)n;
}

void mt_node_describe(const mt_node *n, char *out, size_t cap) {
    if (n->op.type != MT_OP_KERNEL) mt_node_name(n, out, cap);
    else if (n->op.u.kernel.label) snprintf(out, cap, "%s", n->op.u.kernel.label);
    else mt_kernel_describe(n->op.fn.kernel, mt_op_blob((mt_op *)&n->op), out, cap);
}

/* Characters of `s` that DOT's quoted strings need escaped, escaped. */
static void emit_quoted(text_out *t, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') emit(t, "\\%c", *s);
        else if (*s == '\n') emit(t, "\\n");
        else if ((unsigned char)*s >= 0x20) emit(t, "%c", *s);
    }
}

/* Shape and fill of each mtiart_node_kind. */
static const struct {
    const char *shape, *fill;
} kind_style[] = {
    [MTIART_NODE_KERNEL] = {"box", "lightblue"},
    [MTIART_NODE_MEMCPY] = {"cds", "lightyellow"},
    [MTIART_NODE_FILL] = {"folder", "lightgrey"},
    [MTIART_NODE_HOST] = {"hexagon", "palegreen"},
    [MTIART_NODE_EVENT_RECORD] = {"invhouse", "pink"},
    [MTIART_NODE_EVENT_WAIT] = {"house", "pink"},
    [MTIART_NODE_EMPTY] = {"ellipse", "white"},
    [MTIART_NODE_CHILD_GRAPH] = {"box3d", "lavender"},
    [MTIART_NODE_CONDITIONAL] = {"diamond", "orange"},
    [MTIART_NODE_MEM_ALLOC] = {"cylinder", "khaki"},
    [MTIART_NODE_MEM_FREE] = {"cylinder", "thistle"},
};

/* The streams that captured a graph's top-level nodes, in order of first appearance: the
 * k-th gets the k-th border colour, so that the streams of one picture differ. */
typedef struct stream_list {
    uint64_t *ids;
    size_t n;
} stream_list;

static bool list_streams(const mt_dag *d, stream_list *out) {
    out->n = 0;
    if (!(out->ids = malloc((d->num_nodes ? d->num_nodes : 1) * sizeof *out->ids))) return false;
    for (size_t i = 0; i < d->num_nodes; i++) {
        uint64_t id = d->nodes[i].stream_id;
        bool seen = id == 0;
        for (size_t k = 0; k < out->n && !seen; k++) seen = out->ids[k] == id;
        if (!seen) out->ids[out->n++] = id;
    }
    return true;
}

static const char *stream_color(const stream_list *streams, uint64_t stream_id) {
    static const char *palette[] = {"red",    "darkgreen", "blue",     "darkorange",
                                    "purple", "brown",     "deeppink", "teal"};
    for (size_t k = 0; stream_id && k < streams->n; k++)
        if (streams->ids[k] == stream_id) return palette[k % 8];
    return stream_id ? "gray40" : "black"; /* a stream of bodies only; nodes added by hand */
}

static void emit_buffer(text_out *t, const mt_node *n, uint32_t b, unsigned flags) {
    static const char *access[] = {"", "R", "W", "RW"};
    const mtiart_buffer_use *u = &n->buffers[b];
    const mt_buffer_meta *m = n->buffer_meta ? &n->buffer_meta[b] : NULL;
    emit(t, "\\n%s", access[u->access & 3]);
    if (m && m->dtype >= 0) {
        static const char *dtypes[] = {"float32", "float64", "int32", "int64", "bool"};
        emit(t, " %s[", (uint32_t)m->dtype < 5 ? dtypes[m->dtype] : "?");
        for (int32_t d = 0; d < m->ndim; d++)
            emit(t, "%s%lld", d ? ", " : "", (long long)m->shape[d]);
        emit(t, "]");
    } else if (!(flags & MTIART_DOT_VERBOSE)) {
        emit(t, " %llu bytes", (unsigned long long)u->bytes);
    }
    if (m && m->name) {
        emit(t, " \\\"");
        emit_quoted(t, m->name);
        emit(t, "\\\"");
    }
    if (flags & MTIART_DOT_VERBOSE)
        emit(t, " 0x%llx +%llu", (unsigned long long)u->address, (unsigned long long)u->bytes);
}

/* The nodes and edges of `d`, named `<prefix><index>` (n3, and n3_0 for node 0 of the body
 * of node 3); a body becomes a cluster next to its node, which points at its roots. */
static void emit_dag(text_out *t, const mt_dag *d, const char *prefix, int depth, unsigned flags,
                     const stream_list *streams) {
    int indent = 2 * (depth + 1);
    for (size_t i = 0; i < d->num_nodes; i++) {
        const mt_node *n = &d->nodes[i];
        char name[160];
        mt_node_describe(n, name, sizeof name);
        mtiart_node_kind kind = node_kind(n);
        emit(t, "%*s%s%zu [shape=%s, fillcolor=%s, color=%s, label=\"#%zu ", indent, "", prefix, i,
             kind_style[kind].shape, kind_style[kind].fill, stream_color(streams, n->stream_id), i);
        emit_quoted(t, name);
        if (n->op.type == MT_OP_KERNEL && (flags & MTIART_DOT_VERBOSE))
            emit(t, "\\nblocks=%u", n->op.num_blocks);
        for (uint32_t b = 0; b < n->num_buffers; b++) emit_buffer(t, n, b, flags);
        emit(t, "\"];\n");
        if (!n->body) continue;
        char inner[192];
        snprintf(inner, sizeof inner, "%s%zu_", prefix, i);
        emit(t, "%*ssubgraph cluster_%s%zu {\n%*slabel=\"body of #%zu\";\n", indent, "", prefix, i,
             indent + 2, "", i);
        emit_dag(t, n->body, inner, depth + 1, flags, streams);
        emit(t, "%*s}\n", indent, "");
        for (size_t k = 0; k < n->body->num_nodes; k++)
            if (n->body->nodes[k].num_deps == 0)
                emit(t, "%*s%s%zu -> %s%zu [style=dashed];\n", indent, "", prefix, i, inner, k);
    }
    for (size_t i = 0; i < d->num_nodes; i++)
        for (uint32_t k = 0; k < d->nodes[i].num_deps; k++)
            emit(t, "%*s%s%zu -> %s%zu;\n", indent, "", prefix, d->nodes[i].deps[k], prefix, i);
}

/* One cluster per capturing stream, holding the top-level nodes it captured. */
static void emit_stream_clusters(text_out *t, const mt_dag *d, const stream_list *streams) {
    for (size_t s = 0; s < streams->n; s++) {
        uint64_t id = streams->ids[s];
        emit(t,
             "  subgraph cluster_stream_%llu {\n    label=\"stream %llu\";\n"
             "    style=dashed;\n    color=%s;\n    ",
             (unsigned long long)id, (unsigned long long)id, stream_color(streams, id));
        for (size_t k = 0; k < d->num_nodes; k++)
            if (d->nodes[k].stream_id == id) emit(t, "n%zu; ", k);
        emit(t, "\n  }\n");
    }
}

MTIART_API mtiart_status mtiart_graph_to_dot_with_flags(mtiart_graph graph, uint32_t flags,
                                                        char *buffer, size_t capacity,
                                                        size_t *length) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    if (capacity && !buffer) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "buffer is NULL");
    if (flags & ~(uint32_t)MTIART_DOT_VERBOSE)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "unknown DOT flags 0x%x", flags);
    text_out t = {buffer, capacity, 0};
    mtiart_pool_id pool = g->pool ? mt_pool_id_of(g->pool) : (mtiart_pool_id){0, 0};
    emit(&t,
         "digraph mtiart_graph {\n  label=\"%zu nodes, %zu edges, device %d, pool (%llu, %llu)\";\n"
         "  node [style=filled, fontname=monospace, penwidth=2];\n",
         g->dag->num_nodes, g->dag->num_edges, g->dev->index, (unsigned long long)pool.first,
         (unsigned long long)pool.second);
    stream_list streams;
    if (!list_streams(g->dag, &streams)) return mt_oom();
    emit_dag(&t, g->dag, "n", 0, flags, &streams);
    emit_stream_clusters(&t, g->dag, &streams);
    free(streams.ids);
    emit(&t, "}\n");
    if (capacity) buffer[t.len < capacity ? t.len : capacity - 1] = '\0';
    if (length) *length = t.len;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_graph_to_dot(mtiart_graph graph, char *buffer, size_t capacity,
                                             size_t *length) {
    MT_API_ENTRY();
    return mtiart_graph_to_dot_with_flags(graph, MTIART_DOT_VERBOSE, buffer, capacity, length);
}
