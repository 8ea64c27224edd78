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

static void node_release(mt_node *n) {
    mt_op_release(&n->op);
    free(n->buffers);
    free(n->deps);
    if (n->body) mt_dag_unref(n->body);
}

void mt_dag_unref(mt_dag *d) {
    if (atomic_fetch_sub_explicit(&d->refcount, 1, memory_order_acq_rel) != 1) return;
    for (size_t i = 0; i < d->num_nodes; i++) node_release(&d->nodes[i]);
    if (d->blocks) mt_blocks_unref(d->blocks);
    free(d->nodes);
    free(d);
}

mt_dag *mt_dag_clone(const mt_dag *d) {
    mt_dag *c = mt_dag_new();
    if (!c) return NULL;
    c->nodes = calloc(d->num_nodes ? d->num_nodes : 1, sizeof *c->nodes);
    if (!c->nodes) {
        free(c);
        return NULL;
    }
    c->cap_nodes = d->num_nodes ? d->num_nodes : 1;
    for (size_t i = 0; i < d->num_nodes; i++) {
        const mt_node *from = &d->nodes[i];
        mt_node *to = &c->nodes[i];
        if (mt_op_clone(&to->op, &from->op) != MTIART_SUCCESS) goto oom;
        c->num_nodes = i + 1; /* from here on the node is released with the copy */
        if (from->num_buffers && !(to->buffers = malloc(from->num_buffers * sizeof *to->buffers)))
            goto oom;
        if (from->num_deps && !(to->deps = malloc(from->num_deps * sizeof *to->deps))) goto oom;
        if (from->num_buffers)
            memcpy(to->buffers, from->buffers, from->num_buffers * sizeof *to->buffers);
        if (from->num_deps) memcpy(to->deps, from->deps, from->num_deps * sizeof *to->deps);
        to->num_buffers = from->num_buffers;
        to->num_deps = from->num_deps;
        to->stream = from->stream;
        if ((to->body = from->body)) mt_dag_ref(to->body);
    }
    c->num_edges = d->num_edges;
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
    if (g->order) mt_pool_order_hold(g->order, g->pool_seq, -1);
    mt_dag_unref(g->dag);
    if (g->artifact) mt_artifact_unref(g->artifact);
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

static uint32_t count_buffers(const mt_op *op, const mtiart_arg *args, uint32_t num_args) {
    switch (op->type) {
    case MT_OP_KERNEL: {
        uint32_t n = 0;
        for (uint32_t i = 0; i < num_args; i++) n += args[i].kind != MTIART_ARG_VALUE;
        return n;
    }
    case MT_OP_MEMCPY:
        return (op->u.copy.kind == MTIART_MEMCPY_HOST_TO_DEVICE ||
                op->u.copy.kind == MTIART_MEMCPY_DEVICE_TO_HOST)
                   ? 1
               : op->u.copy.kind == MTIART_MEMCPY_DEVICE_TO_DEVICE ? 2
                                                                   : 0;
    case MT_OP_FILL:
    case MT_OP_CONDITIONAL: return 1;
    default: return 0;
    }
}

/* The device buffers an op touches, as the node lists them (`buffers` has room for
 * count_buffers of them); returns how many. */
static uint32_t list_buffers(const mt_op *op, const mtiart_arg *args, uint32_t num_args,
                             mtiart_buffer_use *buffers) {
    uint32_t b = 0;
    if (op->type == MT_OP_KERNEL) {
        for (uint32_t i = 0; i < num_args; i++)
            if (args[i].kind != MTIART_ARG_VALUE)
                /* `reserved` keeps the argument's index (for saving the graph); the
                 * public accessor clears it. */
                buffers[b++] = (mtiart_buffer_use){(uint64_t)(uintptr_t)args[i].value,
                                                   args[i].extent, args[i].kind, i};
    } else if (op->type == MT_OP_MEMCPY) {
        uint32_t kind = op->u.copy.kind;
        if (kind == MTIART_MEMCPY_DEVICE_TO_HOST || kind == MTIART_MEMCPY_DEVICE_TO_DEVICE)
            buffers[b++] = (mtiart_buffer_use){(uint64_t)(uintptr_t)op->u.copy.src,
                                               op->u.copy.bytes, MTIART_ARG_BUFFER_IN, 0};
        if (kind == MTIART_MEMCPY_HOST_TO_DEVICE || kind == MTIART_MEMCPY_DEVICE_TO_DEVICE)
            buffers[b++] = (mtiart_buffer_use){(uint64_t)(uintptr_t)op->u.copy.dst,
                                               op->u.copy.bytes, MTIART_ARG_BUFFER_OUT, 0};
    } else if (op->type == MT_OP_FILL) {
        buffers[b++] = (mtiart_buffer_use){(uint64_t)(uintptr_t)op->u.fill.dst,
                                           (uint64_t)op->u.fill.count * op->u.fill.size,
                                           MTIART_ARG_BUFFER_OUT, 0};
    } else if (op->type == MT_OP_CONDITIONAL) {
        buffers[b++] = (mtiart_buffer_use){(uint64_t)(uintptr_t)op->u.cond.flag,
                                           op->u.cond.flag_size, MTIART_ARG_BUFFER_IN, 0};
    }
    return b;
}

mtiart_status mt_dag_append(mt_dag *d, mt_op *op, mt_dag *body, const size_t *deps, size_t num_deps,
                            const mtiart_arg *args, uint32_t num_args, size_t *index) {
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
    memset(n, 0, sizeof *n);
    uint32_t num_buffers = count_buffers(op, args, num_args);
    if (num_buffers && !(n->buffers = calloc(num_buffers, sizeof *n->buffers))) goto oom;
    /* Duplicate dependencies (a join of two frontiers can repeat a node) are dropped. */
    if (num_deps && !(n->deps = malloc(num_deps * sizeof *n->deps))) {
        free(n->buffers);
        goto oom;
    }
    for (size_t i = 0; i < num_deps; i++) {
        bool seen = false;
        for (uint32_t k = 0; k < n->num_deps && !seen; k++) seen = n->deps[k] == deps[i];
        if (!seen) n->deps[n->num_deps++] = deps[i];
    }
    n->num_buffers = list_buffers(op, args, num_args, n->buffers);
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
static mtiart_status add_node(mt_graph *g, mt_op *op, mt_dag *body, const size_t *dependencies,
                              size_t num_dependencies, const mtiart_arg *args, uint32_t num_args,
                              size_t *node) {
    mtiart_status st = check_add_args(dependencies, num_dependencies, node);
    if (st == MTIART_SUCCESS) st = mt_graph_own(g);
    if (st) {
        mt_op_release(op);
        if (body) mt_dag_unref(body);
        return st;
    }
    return mt_dag_append(g->dag, op, body, dependencies, num_dependencies, args, num_args, node);
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
    mtiart_status st = mt_check_kernel_buffers(args, num_args, g->dev->index, "graph");
    if (st) return st;
    mt_op op;
    st = mt_op_pack_kernel(&op, kernel, num_blocks, args, num_args);
    if (st) return st;
    return add_node(g, &op, NULL, dependencies, num_dependencies, args, num_args, node);
}

MTIART_API mtiart_status mtiart_graph_add_empty_node(mtiart_graph graph, const size_t *dependencies,
                                                     size_t num_dependencies, size_t *node) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    mt_op op = {.type = MT_OP_EMPTY, .num_blocks = 1};
    return add_node(g, &op, NULL, dependencies, num_dependencies, NULL, 0, node);
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
    mtiart_status st = mt_op_pack_memcpy(&op, g->dev->index, "graph", dst, src, bytes, kind);
    if (st) return st;
    return add_node(g, &op, NULL, dependencies, num_dependencies, NULL, 0, node);
}

MTIART_API mtiart_status mtiart_graph_add_fill_node(mtiart_graph graph, const size_t *dependencies,
                                                    size_t num_dependencies, void *dst,
                                                    const void *pattern, uint32_t pattern_size,
                                                    size_t count, size_t *node) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    mt_op op;
    mtiart_status st =
        mt_op_pack_fill(&op, g->dev->index, "graph", dst, pattern, pattern_size, count);
    if (st) return st;
    return add_node(g, &op, NULL, dependencies, num_dependencies, NULL, 0, node);
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
    return add_node(g, &op, NULL, dependencies, num_dependencies, NULL, 0, node);
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
    return add_node(g, &op, NULL, dependencies, num_dependencies, NULL, 0, node);
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
 * to that graph give it a dag of its own). Taken under its lock alone, so that adding two
 * graphs to each other on two threads cannot deadlock. */
static mtiart_status body_of(mtiart_graph body_graph, const mt_graph *into, mt_dag **body) {
    LOOKUP_GRAPH(b, body_graph);
    LOCK_GRAPH(b);
    if (b->dev != into->dev)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "the body graph belongs to device %d, the graph to device %d",
                            b->dev->index, into->dev->index);
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
    mtiart_status st = body_of(child, g, &body);
    if (st) return st;
    LOCK_GRAPH(g);
    mt_op op = {.type = MT_OP_CHILD, .num_blocks = 1};
    return add_node(g, &op, body, dependencies, num_dependencies, NULL, 0, node);
}

MTIART_API mtiart_status mtiart_graph_add_conditional_node(
    mtiart_graph graph, const size_t *dependencies, size_t num_dependencies,
    mtiart_conditional_type type, const void *condition, uint32_t condition_size, mtiart_graph body,
    size_t *node) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    mt_op op;
    mt_dag *b;
    mtiart_status st =
        mt_op_pack_conditional(&op, g->dev->index, "graph", type, condition, condition_size);
    if (st || (st = body_of(body, g, &b))) return st;
    if ((st = mt_check_conditional_body(b))) {
        mt_dag_unref(b);
        return st;
    }
    LOCK_GRAPH(g);
    return add_node(g, &op, b, dependencies, num_dependencies, NULL, 0, node);
}

static mtiart_status check_node(const mt_graph *g, size_t node) {
    if (node >= g->dag->num_nodes)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "node %zu out of range (%zu nodes)", node,
                            g->dag->num_nodes);
    return MTIART_SUCCESS;
}

mtiart_status mt_node_set_kernel_args(mt_node *n, const mtiart_arg *args, uint32_t num_args) {
    mt_op op;
    mtiart_status st = mt_op_pack_kernel(&op, n->op.fn.kernel, n->op.num_blocks, args, num_args);
    if (st) return st;
    uint32_t num_buffers = count_buffers(&op, args, num_args);
    mtiart_buffer_use *buffers = NULL;
    if (num_buffers && !(buffers = calloc(num_buffers, sizeof *buffers))) {
        mt_op_release(&op);
        return mt_oom();
    }
    n->num_buffers = list_buffers(&op, args, num_args, buffers);
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
    if ((st = mt_check_kernel_buffers(args, num_args, g->dev->index, "graph")) ||
        (st = mt_graph_own(g)))
        return st;
    return mt_node_set_kernel_args(&g->dag->nodes[node], args, num_args);
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

/* The nodes and edges of `d`, named `<prefix><index>` (n3, and n3_0 for node 0 of the body
 * of node 3); a body becomes a cluster next to its node, which points at its roots. */
static void emit_dag(text_out *t, const mt_dag *d, const char *prefix, int depth) {
    static const char *access[] = {"", "R", "W", "RW"};
    static const char *colors[] = {"lightblue", "lightyellow", "lightgrey", "palegreen", "white",
                                   "white",     "white",       "lavender",  "orange"};
    int indent = 2 * (depth + 1);
    for (size_t i = 0; i < d->num_nodes; i++) {
        const mt_node *n = &d->nodes[i];
        char name[96];
        mt_node_name(n, name, sizeof name);
        emit(t, "%*s%s%zu [fillcolor=%s, label=\"#%zu %s", indent, "", prefix, i,
             colors[node_kind(n)], i, name);
        if (n->op.type == MT_OP_KERNEL) emit(t, "\\nblocks=%u", n->op.num_blocks);
        for (uint32_t b = 0; b < n->num_buffers; b++)
            emit(t, "\\n%s 0x%llx +%llu", access[n->buffers[b].access & 3],
                 (unsigned long long)n->buffers[b].address,
                 (unsigned long long)n->buffers[b].bytes);
        emit(t, "\"];\n");
        if (!n->body) continue;
        char inner[192];
        snprintf(inner, sizeof inner, "%s%zu_", prefix, i);
        emit(t, "%*ssubgraph cluster_%s%zu {\n%*slabel=\"body of #%zu\";\n", indent, "", prefix, i,
             indent + 2, "", i);
        emit_dag(t, n->body, inner, depth + 1);
        emit(t, "%*s}\n", indent, "");
        for (size_t k = 0; k < n->body->num_nodes; k++)
            if (n->body->nodes[k].num_deps == 0)
                emit(t, "%*s%s%zu -> %s%zu [style=dashed];\n", indent, "", prefix, i, inner, k);
    }
    for (size_t i = 0; i < d->num_nodes; i++)
        for (uint32_t k = 0; k < d->nodes[i].num_deps; k++)
            emit(t, "%*s%s%zu -> %s%zu;\n", indent, "", prefix, d->nodes[i].deps[k], prefix, i);
}

MTIART_API mtiart_status mtiart_graph_to_dot(mtiart_graph graph, char *buffer, size_t capacity,
                                             size_t *length) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    if (capacity && !buffer) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "buffer is NULL");
    text_out t = {buffer, capacity, 0};
    mtiart_pool_id pool = g->pool ? mt_pool_id_of(g->pool) : (mtiart_pool_id){0, 0};
    emit(&t,
         "digraph mtiart_graph {\n  label=\"%zu nodes, %zu edges, device %d, pool (%llu, %llu)\";\n"
         "  node [shape=box, style=filled, fontname=monospace];\n",
         g->dag->num_nodes, g->dag->num_edges, g->dev->index, (unsigned long long)pool.first,
         (unsigned long long)pool.second);
    emit_dag(&t, g->dag, "n", 0);
    emit(&t, "}\n");
    if (capacity) buffer[t.len < capacity ? t.len : capacity - 1] = '\0';
    if (length) *length = t.len;
    return MTIART_SUCCESS;
}
