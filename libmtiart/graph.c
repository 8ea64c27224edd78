/* Graphs: the captured (or hand-built) DAG of operations, its introspection and DOT dump. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>

mt_graph *mt_graph_new(mt_device *dev) {
    mt_graph *g = calloc(1, sizeof *g);
    if (!g) return NULL;
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
    for (size_t i = 0; i < g->num_nodes; i++) {
        mt_op_release(&g->nodes[i].op);
        free(g->nodes[i].buffers);
        free(g->nodes[i].deps);
    }
    free(g->nodes);
    mt_graph_mem_free(g->mem);
    mt_replay_order_unref(g->order);
    if (g->pool) mt_pool_release(g->pool);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

mtiart_status mt_graph_append(mt_graph *g, mt_op *op, const size_t *deps, size_t num_deps,
                              const mtiart_arg *args, uint32_t num_args, size_t *index) {
    mtiart_status st = MTIART_SUCCESS;
    for (size_t i = 0; i < num_deps; i++)
        if (deps[i] >= g->num_nodes) {
            st = mt_set_error(MTIART_ERROR_INVALID_VALUE,
                              "dependency %zu names node %zu, but the graph has %zu nodes", i,
                              deps[i], g->num_nodes);
            goto fail;
        }
    if (g->num_nodes == g->cap_nodes) {
        size_t cap = g->cap_nodes ? g->cap_nodes * 2 : 16;
        mt_node *grown = realloc(g->nodes, cap * sizeof *grown);
        if (!grown) goto oom;
        g->nodes = grown;
        g->cap_nodes = cap;
    }
    mt_buffer bufs[MT_MAX_ARGS];
    uint32_t num_buffers = mt_op_buffers(op, args, num_args, bufs);
    if (num_buffers) {
        /* The one lookup of each buffer: checked, and held for the graph's lifetime. */
        if (!g->mem && !(g->mem = mt_graph_mem_new(g->dev, g->pool, 0))) goto oom;
        st = mt_check_buffers(g->dev, bufs, num_buffers, "graph", g->mem, g->num_nodes);
        if (st) goto fail;
    }
    mt_node *n = &g->nodes[g->num_nodes];
    memset(n, 0, sizeof *n);
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
    for (uint32_t b = 0; b < num_buffers; b++)
        n->buffers[b] =
            (mtiart_buffer_use){(uint64_t)(uintptr_t)bufs[b].ptr, bufs[b].bytes, bufs[b].access, 0};
    n->num_buffers = num_buffers;
    n->op = *op; /* the graph now owns the op's blob and references */
    g->num_edges += n->num_deps;
    *index = g->num_nodes++;
    return MTIART_SUCCESS;
oom:
    st = mt_oom();
fail:
    mt_op_release(op);
    return st;
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

MTIART_API mtiart_status mtiart_graph_add_kernel_node(mtiart_graph graph,
                                                      const size_t *dependencies,
                                                      size_t num_dependencies,
                                                      mtiart_kernel_fn kernel, uint32_t num_blocks,
                                                      const mtiart_arg *args, uint32_t num_args,
                                                      size_t *node) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    if (!node || (num_dependencies && !dependencies))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "NULL output or dependency list");
    mt_op op;
    mtiart_status st = mt_op_pack_kernel(&op, kernel, num_blocks, args, num_args);
    if (st) return st;
    return mt_graph_append(g, &op, dependencies, num_dependencies, args, num_args, node);
}

MTIART_API mtiart_status mtiart_graph_add_empty_node(mtiart_graph graph, const size_t *dependencies,
                                                     size_t num_dependencies, size_t *node) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    if (!node || (num_dependencies && !dependencies))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "NULL output or dependency list");
    mt_op op = {.type = MT_OP_EMPTY, .num_blocks = 1};
    return mt_graph_append(g, &op, dependencies, num_dependencies, NULL, 0, node);
}

MTIART_API mtiart_status mtiart_graph_add_mem_alloc_node(mtiart_graph graph,
                                                         const size_t *dependencies,
                                                         size_t num_dependencies, size_t bytes,
                                                         size_t *node, void **ptr) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    if (!node || !ptr || (num_dependencies && !dependencies))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "NULL output or dependency list");
    mt_op op = {.type = MT_OP_MEM_ALLOC, .num_blocks = 1};
    void *address;
    mtiart_status st = mt_graph_alloc_new(g->dev, g->dev->default_stream, g->pool, bytes,
                                          &op.u.mem.alloc, &address);
    if (st) return st;
    st = mt_graph_append(g, &op, dependencies, num_dependencies, NULL, 0, node);
    if (st == MTIART_SUCCESS) *ptr = address;
    return st;
}

mtiart_status mt_graph_append_mem_free(mt_graph *g, mt_graph_alloc *alloc, const size_t *deps,
                                       size_t num_deps, size_t *index) {
    mt_op op = {.type = MT_OP_MEM_FREE, .num_blocks = 1};
    op.u.mem.alloc = alloc;
    for (size_t i = 0; i < g->num_nodes; i++)
        if (g->nodes[i].op.type == MT_OP_MEM_FREE && g->nodes[i].op.u.mem.alloc == alloc) {
            mt_op_release(&op);
            return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                                "the allocation is freed already, by node %zu of the graph", i);
        }
    return mt_graph_append(g, &op, deps, num_deps, NULL, 0, index);
}

MTIART_API mtiart_status mtiart_graph_add_mem_free_node(mtiart_graph graph,
                                                        const size_t *dependencies,
                                                        size_t num_dependencies, void *ptr,
                                                        size_t *node) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    if (!node || (num_dependencies && !dependencies))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "NULL output or dependency list");
    mt_graph_alloc *alloc = mt_graph_alloc_find(g->dev, ptr);
    if (!alloc)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "%p is not the start of a graph allocation (one a memory alloc "
                            "node made on device %d)",
                            ptr, g->dev->index);
    return mt_graph_append_mem_free(g, alloc, dependencies, num_dependencies, node);
}

MTIART_API mtiart_status mtiart_graph_clone(mtiart_graph graph, mtiart_graph *clone) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    MT_CHECK_NOT_NULL(clone);
    for (size_t i = 0; i < g->num_nodes; i++)
        if (g->nodes[i].op.type == MT_OP_MEM_ALLOC || g->nodes[i].op.type == MT_OP_MEM_FREE)
            return mt_set_error(MTIART_ERROR_NOT_SUPPORTED,
                                "node %zu is a memory node: a graph with memory nodes cannot "
                                "be cloned (its allocations' addresses are its own)",
                                i);
    mt_graph *c = mt_graph_new(g->dev);
    MT_CHECK_ALLOC(c);
    c->nodes = malloc((g->num_nodes ? g->num_nodes : 1) * sizeof *c->nodes);
    /* The clone holds what it uses, as any graph does, for as long as it lives. */
    if (!c->nodes || (g->mem && !(c->mem = mt_graph_mem_copy(g->mem, false)))) goto oom;
    c->cap_nodes = g->num_nodes ? g->num_nodes : 1;
    for (size_t i = 0; i < g->num_nodes; i++) {
        const mt_node *n = &g->nodes[i];
        mt_node *cn = &c->nodes[i];
        memset(cn, 0, sizeof *cn);
        if (n->num_buffers && !(cn->buffers = malloc(n->num_buffers * sizeof *cn->buffers)))
            goto oom;
        if (n->num_deps && !(cn->deps = malloc(n->num_deps * sizeof *cn->deps))) {
            free(cn->buffers);
            goto oom;
        }
        if (mt_op_clone(&cn->op, &n->op) != MTIART_SUCCESS) {
            free(cn->buffers);
            free(cn->deps);
            goto oom;
        }
        if (n->num_buffers) memcpy(cn->buffers, n->buffers, n->num_buffers * sizeof *cn->buffers);
        if (n->num_deps) memcpy(cn->deps, n->deps, n->num_deps * sizeof *cn->deps);
        cn->num_buffers = n->num_buffers;
        cn->num_deps = n->num_deps;
        c->num_nodes++;
    }
    c->num_edges = g->num_edges;
    if (g->pool) {
        mt_pool_retain(g->pool);
        c->pool = g->pool;
    }
    return mt_graph_publish(c, clone);
oom:
    mt_graph_free(c);
    return mt_oom();
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
    *count = g->num_nodes;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_graph_get_edge_count(mtiart_graph graph, size_t *count) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    MT_CHECK_NOT_NULL(count);
    *count = g->num_edges;
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

void mt_op_name(const mt_op *op, char *out, size_t cap) {
    static const char *copy_kinds[] = {"HtoH", "HtoD", "DtoH", "DtoD"};
    switch (op->type) {
    case MT_OP_KERNEL: mt_kernel_name(op->fn.kernel, out, cap); break;
    case MT_OP_MEMCPY: snprintf(out, cap, "memcpy %s", copy_kinds[op->u.copy.kind & 3]); break;
    case MT_OP_FILL: snprintf(out, cap, "fill x%u", op->u.fill.size); break;
    case MT_OP_HOST: snprintf(out, cap, "host function"); break;
    case MT_OP_EVENT_RECORD: snprintf(out, cap, "event record"); break;
    case MT_OP_EVENT_WAIT:
        snprintf(out, cap, op->u.event.event ? "wait external event" : "event wait");
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
    case MT_OP_MEM_ALLOC: return MTIART_NODE_MEM_ALLOC;
    case MT_OP_MEM_FREE: return MTIART_NODE_MEM_FREE;
    default: return MTIART_NODE_EMPTY;
    }
}

static mtiart_status check_node(mt_graph *g, size_t node) {
    if (node >= g->num_nodes)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "node %zu out of range (%zu nodes)", node,
                            g->num_nodes);
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_graph_get_node_info(mtiart_graph graph, size_t node,
                                                    mtiart_node_info *info) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    mtiart_status st = check_node(g, node);
    if (st) return st;
    MT_CHECK_NOT_NULL(info);
    const mt_node *n = &g->nodes[node];
    memset(info, 0, sizeof *info);
    info->kind = node_kind(n);
    info->num_blocks = n->op.num_blocks;
    info->num_buffers = n->num_buffers;
    info->num_dependencies = n->num_deps;
    mt_op_name(&n->op, info->name, sizeof info->name);
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
    if (index >= g->nodes[node].num_buffers)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "node %zu has %u buffers", node,
                            g->nodes[node].num_buffers);
    *use = g->nodes[node].buffers[index];
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
    if (index >= g->nodes[node].num_deps)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "node %zu has %u dependencies", node,
                            g->nodes[node].num_deps);
    *dependency = g->nodes[node].deps[index];
    return MTIART_SUCCESS;
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

MTIART_API mtiart_status mtiart_graph_to_dot(mtiart_graph graph, char *buffer, size_t capacity,
                                             size_t *length) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    if (capacity && !buffer) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "buffer is NULL");
    text_out t = {buffer, capacity, 0};
    static const char *access[] = {"", "R", "W", "RW"};
    static const char *colors[] = {"lightblue", "lightyellow", "lightgrey", "palegreen", "white",
                                   "white",     "white",       "pink",      "pink"};
    mtiart_pool_id pool = g->pool ? mt_pool_id_of(g->pool) : (mtiart_pool_id){0, 0};
    emit(&t,
         "digraph mtiart_graph {\n  label=\"%zu nodes, %zu edges, device %d, pool (%llu, %llu)\";\n"
         "  node [shape=box, style=filled, fontname=monospace];\n",
         g->num_nodes, g->num_edges, g->dev->index, (unsigned long long)pool.first,
         (unsigned long long)pool.second);
    for (size_t i = 0; i < g->num_nodes; i++) {
        const mt_node *n = &g->nodes[i];
        char name[96];
        mt_op_name(&n->op, name, sizeof name);
        emit(&t, "  n%zu [fillcolor=%s, label=\"#%zu %s", i, colors[node_kind(n)], i, name);
        if (n->op.type == MT_OP_KERNEL) emit(&t, "\\nblocks=%u", n->op.num_blocks);
        if (n->op.type == MT_OP_MEM_ALLOC || n->op.type == MT_OP_MEM_FREE) {
            size_t bytes;
            void *address = mt_graph_alloc_address(n->op.u.mem.alloc, &bytes);
            emit(&t, "\\n%p +%zu", address, bytes);
        }
        for (uint32_t b = 0; b < n->num_buffers; b++)
            emit(&t, "\\n%s 0x%llx +%llu", access[n->buffers[b].access & 3],
                 (unsigned long long)n->buffers[b].address,
                 (unsigned long long)n->buffers[b].bytes);
        emit(&t, "\"];\n");
    }
    for (size_t i = 0; i < g->num_nodes; i++)
        for (uint32_t d = 0; d < g->nodes[i].num_deps; d++)
            emit(&t, "  n%zu -> n%zu;\n", g->nodes[i].deps[d], i);
    emit(&t, "}\n");
    if (capacity) buffer[t.len < capacity ? t.len : capacity - 1] = '\0';
    if (length) *length = t.len;
    return MTIART_SUCCESS;
}
