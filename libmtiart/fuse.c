/*
 * Fusion: a pass of instantiation that lets one launch of the kernel library do the work
 * of consecutive nodes - a matmul and the elementwise operations on its result (bias,
 * activation, softmax, ...) - tile by tile while the tile is in cache, instead of a pass
 * over memory and a node each.
 *
 * The pass works on a copy: the executable's plan is built from the graph it returns,
 * whose fused node stands for several of the captured graph's (origin[] maps every node
 * back to the first of them, for messages). The captured graph keeps its nodes, buffers
 * and dumps. The kernel library decides what fuses (mt_k_fuse) and guarantees the fused
 * launch writes every buffer the nodes wrote, with the same bits.
 *
 * Which nodes: a chain in which each node's only dependency is the one before it. Nodes
 * that depended on any of them depend on the fused node, which finishes all of their
 * work, so the graph's order holds.
 */
#include "internal.h"
#include "kernels/kernels.h"

#include <stdlib.h>

bool mt_graph_fusion = true;

/* The longest chain offered to the kernel library: a matmul and its epilogue steps. */
#define FUSE_MAX_CHAIN 9

typedef struct fused_group {
    uint32_t head;
    mt_fused_call call;
} fused_group;

static bool is_kernel(const mt_node *n, mtiart_kernel_fn fn) {
    return n->op.type == MT_OP_KERNEL && (!fn || n->op.fn.kernel == fn);
}

/* Offer the chain starting at matmul node v to the kernel library; true if it fused a
 * prefix of it, marking the nodes it took in `head_of`. */
static bool fuse_chain(const mt_graph *g, uint32_t v, const uint32_t *next, uint32_t *head_of,
                       fused_group *group) {
    uint32_t chain[FUSE_MAX_CHAIN], len = 0;
    for (uint32_t u = v; u != UINT32_MAX && len < FUSE_MAX_CHAIN; u = next[u]) {
        if (!is_kernel(&g->nodes[u], NULL) || head_of[u] != UINT32_MAX) break;
        chain[len++] = u;
    }
    if (len < 2) return false;
    void *argv[FUSE_MAX_CHAIN][MT_MAX_ARGS];
    mt_kernel_call calls[FUSE_MAX_CHAIN];
    for (uint32_t i = 0; i < len; i++) {
        mt_op *op = &g->nodes[chain[i]].op;
        calls[i] = (mt_kernel_call){op->fn.kernel, argv[i], mt_blob_argv(mt_op_blob(op), argv[i]),
                                    op->num_blocks};
    }
    uint32_t used = mt_k_fuse(calls, len, &group->call);
    if (used < 2) return false;
    group->head = v;
    for (uint32_t i = 0; i < used; i++) head_of[chain[i]] = v;
    return true;
}

mtiart_status mt_fuse_plan(const mt_graph *g, mt_graph **planned, uint32_t **origin) {
    *planned = NULL;
    *origin = NULL;
    const mtiart_kernel_fn matmul = mt_builtin_kernel_by_id(MT_KID_MATMUL);
    const size_t n = g->num_nodes;
    size_t i = 0;
    while (i < n && !is_kernel(&g->nodes[i], matmul)) i++;
    if (i == n) return MTIART_SUCCESS; /* the common case: one look at each node */

    mtiart_status st = MTIART_SUCCESS;
    uint32_t *next = malloc(n * sizeof *next), *head_of = malloc(n * sizeof *head_of);
    uint32_t *map = malloc(n * sizeof *map), *from = malloc(n * sizeof *from);
    size_t *deps = NULL, cap_deps = 0, num_groups = 0;
    fused_group *groups = NULL;
    mt_graph *p = NULL;
    if (!next || !head_of || !map || !from) goto oom;
    /* next[u]: the first node whose only dependency is u */
    for (size_t v = 0; v < n; v++) next[v] = head_of[v] = UINT32_MAX;
    for (size_t w = n; w-- > 0;)
        if (g->nodes[w].num_deps == 1) next[g->nodes[w].deps[0]] = (uint32_t)w;
    for (size_t v = i; v < n; v++) {
        if (!is_kernel(&g->nodes[v], matmul) || head_of[v] != UINT32_MAX) continue;
        fused_group *grown = realloc(groups, (num_groups + 1) * sizeof *groups);
        if (!grown) goto oom;
        groups = grown;
        if (fuse_chain(g, (uint32_t)v, next, head_of, &groups[num_groups])) num_groups++;
    }
    if (num_groups == 0) goto done;

    p = mt_graph_new(g->dev);
    if (!p) goto oom;
    for (size_t v = 0, k = 0; v < n; v++) {
        const mt_node *node = &g->nodes[v];
        if (head_of[v] != UINT32_MAX && head_of[v] != v) { /* done by its group's node */
            map[v] = map[head_of[v]];
            continue;
        }
        mt_op op;
        if (head_of[v] == v) {
            const mt_fused_call *call = &groups[k++].call;
            st = mt_op_pack_kernel(&op, call->fn, call->num_blocks, call->args, call->nargs);
        } else {
            st = mt_op_clone(&op, &node->op);
        }
        if (st) goto done;
        if (node->num_deps > cap_deps) {
            size_t *grown = realloc(deps, node->num_deps * sizeof *deps);
            if (!grown) {
                mt_op_release(&op);
                goto oom;
            }
            deps = grown;
            cap_deps = node->num_deps;
        }
        for (uint32_t d = 0; d < node->num_deps; d++) deps[d] = map[node->deps[d]];
        size_t index;
        /* The plan needs no buffer list: the captured graph keeps it. */
        st = mt_graph_append(p, &op, deps, node->num_deps, NULL, 0, &index);
        if (st) goto done;
        map[v] = (uint32_t)index;
        from[index] = (uint32_t)v;
    }
    *planned = p;
    *origin = from;
    p = NULL;
    from = NULL;
    goto done;
oom:
    st = mt_oom();
done:
    if (p) mt_graph_free(p);
    free(next);
    free(head_of);
    free(map);
    free(from);
    free(deps);
    free(groups);
    return st;
}
