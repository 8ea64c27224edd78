/*
 * registry.c - the registry of the kernel library's built-in kernels: a stable numeric id
 * for each (saved graphs store it), its name, a function that describes one launch and one
 * that checks a launch read from a saved graph.
 *
 * The runtime uses it to name kernels in messages and dumps, to recognise operations when
 * it plans an executable graph, and to map saved kernel ids back to functions. The
 * kernels themselves are static in their files; each file lists its own (the *_defs
 * tables), and this file only joins the lists.
 */
#include "kernels.h"
#include "../internal.h"

#include <stdio.h>

static const struct {
    const mt_kdef *defs;
    const size_t *count;
} k_tables[] = {
    {mt_k_elementwise_defs, &mt_k_elementwise_ndefs},
    {mt_k_matmul_defs, &mt_k_matmul_ndefs},
    {mt_k_reduce_defs, &mt_k_reduce_ndefs},
};

const mt_kdef *mt_k_find(mtiart_kernel_fn fn) {
    if (!fn) return NULL;
    for (size_t t = 0; t < sizeof k_tables / sizeof *k_tables; t++)
        for (size_t i = 0; i < *k_tables[t].count; i++)
            if (k_tables[t].defs[i].fn == fn) return &k_tables[t].defs[i];
    return NULL;
}

static const mt_kdef *find_id(uint32_t id) {
    if (id == 0) return NULL;
    for (size_t t = 0; t < sizeof k_tables / sizeof *k_tables; t++)
        for (size_t i = 0; i < *k_tables[t].count; i++)
            if (k_tables[t].defs[i].id == id) return &k_tables[t].defs[i];
    return NULL;
}

uint32_t mt_builtin_kernel_id(mtiart_kernel_fn fn) {
    const mt_kdef *d = mt_k_find(fn);
    return d ? d->id : 0;
}

mtiart_kernel_fn mt_builtin_kernel_by_id(uint32_t id) {
    const mt_kdef *d = find_id(id);
    return d ? d->fn : NULL;
}

const char *mt_builtin_kernel_name(mtiart_kernel_fn fn) {
    const mt_kdef *d = mt_k_find(fn);
    return d ? d->name : NULL;
}

int mt_builtin_kernel_describe(mtiart_kernel_fn fn, void *const *argv, uint32_t nargs, char *out,
                               size_t cap) {
    const mt_kdef *d = mt_k_find(fn);
    /* Every built-in takes its parameter struct first. */
    if (!d || nargs == 0) return -1;
    return d->describe(argv, out, cap);
}

int mt_builtin_kernel_validate(mtiart_kernel_fn fn, const void *params, uint32_t size,
                               const uint64_t *extent, const uint64_t *align, uint32_t nbufs,
                               uint32_t num_blocks, char *why, size_t cap) {
    const mt_kdef *d = mt_k_find(fn);
    if (!d) return mt_k_bad(why, cap, 0, "not a built-in kernel");
    mt_ksaved l = {params, size, extent, align, nbufs, num_blocks};
    return d->validate(&l, why, cap);
}
