/*
 * Fusion: a pass of instantiation that lets one launch of the kernel library do the work
 * of consecutive nodes - a matmul and the elementwise operations on its result (bias,
 * activation, softmax, ...) - tile by tile while the tile is in cache, instead of a pass
 * over memory and a node each.
 *
 * The pass works on a view of the plan's nodes and returns what is left of it: the
 * captured graph keeps its nodes, buffers and dumps. The kernel library decides what
 * fuses (mt_k_fuse) and guarantees the fused launch writes every buffer the nodes wrote,
 * with the same bits.
 *
 * Which nodes: a chain in which each node's only dependency is the one before it, all of
 * one scope. Nodes that depended on any of them depend on the fused node, which finishes
 * all of their work, so the graph's order holds (an extra wait, never a missing one).
 */
#include "internal.h"
#include "kernels/kernels.h"

#include <stdlib.h>

bool mt_graph_fusion = true;

/* The longest chain offered to the kernel library: a matmul and its epilogue steps. */
#define FUSE_MAX_CHAIN MT_FUSE_MAX_CHAIN
#define NONE UINT32_MAX

static bool is_kernel(const mt_op *op, mtiart_kernel_fn fn) {
    return op->type == MT_OP_KERNEL && (!fn || op->fn.kernel == fn);
}

/* How many of ops[0..len) the kernel library runs as one launch (*call): 0 or 1 if none. */
static uint32_t fuse_calls(const mt_op *const *ops, uint32_t len, mt_fused_call *call) {
    void *argv[FUSE_MAX_CHAIN][MT_MAX_ARGS];
    mt_kernel_call calls[FUSE_MAX_CHAIN];
    for (uint32_t i = 0; i < len; i++) {
        mt_op *op = (mt_op *)ops[i];
        calls[i] = (mt_kernel_call){op->fn.kernel, argv[i], mt_blob_argv(mt_op_blob(op), argv[i]),
                                    op->num_blocks};
    }
    return mt_k_fuse(calls, len, call);
}

mtiart_status mt_fuse_chain(const mt_op *const *ops, uint32_t len, mt_op *fused) {
    if (len < 2 || len > FUSE_MAX_CHAIN) return MTIART_ERROR_NOT_SUPPORTED;
    for (uint32_t i = 0; i < len; i++)
        if (!is_kernel(ops[i], NULL)) return MTIART_ERROR_NOT_SUPPORTED;
    mt_fused_call call;
    if (fuse_calls(ops, len, &call) != len) return MTIART_ERROR_NOT_SUPPORTED;
    return mt_op_pack_kernel(fused, call.fn, call.num_blocks, call.args, call.nargs);
}

void mt_fusion_free(mt_fusion *f) {
    if (f->ops)
        for (uint32_t k = 0; k < f->num_groups; k++) mt_op_release(&f->ops[k]);
    free(f->nodes);
    free(f->kept);
    free(f->left);
    free(f->group);
    free(f->member_begin);
    free(f->members);
    free(f->ops);
    free(f->dep_store);
    memset(f, 0, sizeof *f);
}

/* Offer the chain starting at matmul node v to the kernel library; if it fused a prefix
 * of it, the prefix becomes chain f->num_groups. */
static mtiart_status fuse_from(const mt_fuse_node *view, uint32_t v, const uint32_t *next,
                               mt_fusion *f) {
    uint32_t chain[FUSE_MAX_CHAIN], len = 0;
    const mt_op *ops[FUSE_MAX_CHAIN];
    for (uint32_t u = v; u != NONE && len < FUSE_MAX_CHAIN; u = next[u]) {
        if (!is_kernel(view[u].op, NULL) || f->group[u] != NONE || view[u].scope != view[v].scope)
            break;
        ops[len] = view[u].op;
        chain[len++] = u;
    }
    if (len < 2) return MTIART_SUCCESS;
    mt_fused_call call;
    uint32_t used = fuse_calls(ops, len, &call);
    if (used < 2) return MTIART_SUCCESS;
    uint32_t k = f->num_groups;
    mtiart_status st =
        mt_op_pack_kernel(&f->ops[k], call.fn, call.num_blocks, call.args, call.nargs);
    if (st) return st;
    f->num_groups++;
    uint32_t begin = f->member_begin[k];
    for (uint32_t i = 0; i < used; i++) {
        f->group[chain[i]] = k;
        f->members[begin + i] = chain[i];
    }
    f->member_begin[k + 1] = begin + used;
    return MTIART_SUCCESS;
}

/* The view without the nodes the chains absorbed: a chain's first node stands for it. */
static mtiart_status compact(const mt_fuse_node *view, uint32_t n, mt_fusion *f) {
    size_t total = 0;
    for (uint32_t v = 0; v < n; v++) total += view[v].num_deps;
    f->nodes = malloc(n * sizeof *f->nodes);
    f->kept = malloc(n * sizeof *f->kept);
    f->dep_store = malloc((total ? total : 1) * sizeof *f->dep_store);
    uint32_t *stamp = calloc(n, sizeof *stamp);
    if (!f->nodes || !f->kept || !f->dep_store || !stamp) {
        free(stamp);
        return mt_oom();
    }
    size_t used = 0;
    uint32_t m = 0;
    for (uint32_t v = 0; v < n; v++) {
        uint32_t k = f->group[v];
        if (k != NONE && f->members[f->member_begin[k]] != v) { /* done by its chain's node */
            f->left[v] = f->left[f->members[f->member_begin[k]]];
            continue;
        }
        /* Dependencies among the nodes left, each once: two nodes of a chain are one. */
        size_t first = used;
        for (uint32_t d = 0; d < view[v].num_deps; d++) {
            uint32_t to = f->left[view[v].deps[d]];
            if (stamp[to] == v + 1) continue;
            stamp[to] = v + 1;
            f->dep_store[used++] = to;
        }
        f->nodes[m] = (mt_fuse_node){k != NONE ? &f->ops[k] : view[v].op, NULL,
                                     (uint32_t)(used - first), view[v].scope};
        f->nodes[m].deps = (const size_t *)(uintptr_t)first; /* an offset until the end */
        f->kept[m] = v;
        f->left[v] = m++;
    }
    for (uint32_t i = 0; i < m; i++) f->nodes[i].deps = f->dep_store + (uintptr_t)f->nodes[i].deps;
    f->m = m;
    free(stamp);
    return MTIART_SUCCESS;
}

mtiart_status mt_fuse_plan(const mt_fuse_node *view, uint32_t n, mt_fusion *out) {
    memset(out, 0, sizeof *out);
    const mtiart_kernel_fn matmul = mt_builtin_kernel_by_id(MT_KID_MATMUL);
    uint32_t i = 0;
    while (i < n && !is_kernel(view[i].op, matmul)) i++;
    if (i == n) return MTIART_SUCCESS; /* the common case: one look at each node */

    mtiart_status st = MTIART_SUCCESS;
    mt_fusion *f = out;
    uint32_t matmuls = 0;
    for (uint32_t v = i; v < n; v++) matmuls += is_kernel(view[v].op, matmul);
    uint32_t *next = malloc(n * sizeof *next);
    f->left = malloc(n * sizeof *f->left);
    f->group = malloc(n * sizeof *f->group);
    f->members = malloc(n * sizeof *f->members);
    f->member_begin = calloc(matmuls + 1, sizeof *f->member_begin);
    f->ops = malloc(matmuls * sizeof *f->ops);
    if (!next || !f->left || !f->group || !f->members || !f->member_begin || !f->ops) goto oom;
    /* next[u]: the first node whose only dependency is u */
    for (uint32_t v = 0; v < n; v++) next[v] = f->group[v] = NONE;
    for (uint32_t w = n; w-- > 0;)
        if (view[w].num_deps == 1) next[view[w].deps[0]] = w;
    for (uint32_t v = i; v < n && !st; v++)
        if (is_kernel(view[v].op, matmul) && f->group[v] == NONE) st = fuse_from(view, v, next, f);
    if (!st && f->num_groups) st = compact(view, n, f);
    free(next);
    if (st || !f->num_groups) mt_fusion_free(f);
    return st;
oom:
    free(next);
    mt_fusion_free(f);
    return mt_oom();
}
