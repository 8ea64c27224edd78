/*
 * Graph checks that need what only the runtime knows: every byte range each node reads and
 * writes (described kernel arguments, copies, fills, conditions) and the graph's edges;
 * and the replay order of graphs that share a memory pool.
 *
 * Races. Two nodes race when no path joins them and their buffers overlap, one at least
 * writing. The check never compares all pairs:
 *   - every buffer use becomes an access [lo, hi) of a node; a sweep over the accesses
 *     sorted by address (radix sort: linear) cuts the address space into segments where the same
 * accesses are live (identical buffers give one segment, disjoint slices of one allocation none in
 *     common), so the cost is O(A log A) plus the live accesses summed over segments;
 *   - in a segment with a writer, the accesses are taken in node order (node indices are
 *     a topological order: a node depends on earlier nodes only). A writer must follow
 *     every earlier access and a reader every earlier writer; the scan back from an
 *     access stops at the first earlier writer that precedes it and was itself "clean"
 *     (preceded by everything before it), since everything before that writer precedes
 *     it too. A correct graph needs O(live accesses) reachability queries per segment;
 *     a racy one as many more as there are racing pairs: every pair is found;
 *   - reachability comes from a chain decomposition of the nodes (a stream's work is one
 *     chain): u precedes v iff u's position in its chain is at most the last position of
 *     that chain among v's ancestors. That column is computed per chain, incrementally, as
 *     far as the queries reach (an edge u -> v answers without it). Queries of a captured
 *     graph join nodes close to each other, so the whole check costs about
 *     O(A log A + (nodes + edges) * streams); the worst case (every chain queried over
 *     the whole graph) is O((nodes + edges) * chains).
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>

#define NONE UINT32_MAX
#define MODE_READ 1u
#define MODE_WRITE 2u
/* Reachability columns kept at once, in bytes. */
#define COLUMN_BUDGET (64u << 20)
/* Racing pairs kept (and counted) at most, in one graph. */
#define MAX_REPORTS (1u << 20)

typedef struct access {
    uint64_t lo, hi;
    uint32_t node;
    uint32_t mode; /* MODE_READ | MODE_WRITE */
} access;

typedef struct accesses {
    access *v;
    size_t n, cap;
} accesses;

static bool push_access(accesses *a, uint64_t lo, uint64_t bytes, uint32_t node, uint32_t mode) {
    if (!bytes || !mode) return true;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        access *grown = realloc(a->v, cap * sizeof *grown);
        if (!grown) return false;
        a->v = grown;
        a->cap = cap;
    }
    a->v[a->n++] = (access){lo, lo + bytes, node, mode};
    return true;
}

/* Every buffer `n` touches, those of its body (and bodies inside it) included. */
static bool gather(accesses *a, const mt_node *n, uint32_t node, uint32_t depth) {
    for (uint32_t b = 0; b < n->num_buffers; b++)
        if (!push_access(a, n->buffers[b].address, n->buffers[b].bytes, node,
                         n->buffers[b].access & (MODE_READ | MODE_WRITE)))
            return false;
    if (n->body && depth < MT_MAX_NESTING)
        for (size_t i = 0; i < n->body->num_nodes; i++)
            if (!gather(a, &n->body->nodes[i], node, depth + 1)) return false;
    return true;
}

/* ------------------------------------------------------------------ reachability */

/* Chain c's column over nodes [base, done): for each, the last position of c among the
 * node and its ancestors (NONE: none). Nodes before the chain's head have none. Computed
 * only as far as queries reach: a query of u then v needs it up to v, and captured graphs
 * query nodes close to each other, so a graph costs about O(nodes + edges) per stream. */
typedef struct column {
    uint32_t *v;
    uint32_t base, done, cap;
} column;

typedef struct reach {
    const mt_dag *d;
    uint32_t n;
    uint32_t *chain_of, *pos, *head; /* head: chain -> first node */
    uint32_t num_chains;
    column *column;
    size_t kept; /* entries of all columns */
} reach;

static void drop_columns(reach *r) {
    for (uint32_t c = 0; c < r->num_chains; c++) {
        free(r->column[c].v);
        r->column[c] = (column){NULL, r->head[c], r->head[c], 0};
    }
    r->kept = 0;
}

static void reach_free(reach *r) {
    if (r->column) drop_columns(r);
    free(r->column);
    free(r->chain_of);
    free(r->pos);
    free(r->head);
}

static bool reach_init(reach *r, const mt_dag *d) {
    memset(r, 0, sizeof *r);
    r->d = d;
    r->n = (uint32_t)d->num_nodes;
    size_t n = r->n ? r->n : 1;
    uint32_t *tail = malloc(n * sizeof *tail);
    r->chain_of = malloc(n * sizeof *r->chain_of);
    r->pos = malloc(n * sizeof *r->pos);
    r->head = malloc(n * sizeof *r->head);
    if (!tail || !r->chain_of || !r->pos || !r->head) {
        free(tail);
        return false;
    }
    /* A node continues the chain of a dependency that still ends there: one captured by
     * the same stream first, so that a stream's work makes one chain. */
    for (uint32_t v = 0; v < r->n; v++) {
        const mt_node *node = &d->nodes[v];
        uint32_t c = NONE;
        for (int pass = 0; pass < 2 && c == NONE; pass++)
            for (uint32_t k = 0; k < node->num_deps && c == NONE; k++) {
                uint32_t u = (uint32_t)node->deps[k];
                if (tail[r->chain_of[u]] == u && (pass || d->nodes[u].stream_id == node->stream_id))
                    c = r->chain_of[u];
            }
        if (c == NONE) {
            c = r->num_chains++;
            r->head[c] = v;
            r->pos[v] = 0;
        } else {
            r->pos[v] = r->pos[tail[c]] + 1;
        }
        r->chain_of[v] = c;
        tail[c] = v;
    }
    free(tail);
    r->column = calloc(r->num_chains ? r->num_chains : 1, sizeof *r->column);
    if (r->column) drop_columns(r);
    return r->column != NULL;
}

/* Chain c's column computed through node v; NULL when out of host memory. */
static const column *column_through(reach *r, uint32_t c, uint32_t v) {
    column *col = &r->column[c];
    if (v < col->done) return col;
    uint32_t need = v + 1 - col->base;
    if (need > col->cap) {
        if (r->kept + need - col->cap > COLUMN_BUDGET / sizeof(uint32_t)) {
            drop_columns(r); /* recomputed as queries need them */
            col = &r->column[c];
            need = v + 1 - col->base;
        }
        uint32_t cap = col->cap * 2 > need ? col->cap * 2 : need;
        if (cap > r->n - col->base) cap = r->n - col->base;
        uint32_t *grown = realloc(col->v, cap * sizeof *grown);
        if (!grown) return NULL;
        r->kept += cap - col->cap;
        col->v = grown;
        col->cap = cap;
    }
    for (uint32_t x = col->done; x <= v; x++) {
        uint32_t best = NONE;
        if (r->chain_of[x] == c) {
            best = r->pos[x];
        } else {
            const mt_node *node = &r->d->nodes[x];
            for (uint32_t k = 0; k < node->num_deps; k++) {
                if (node->deps[k] < col->base) continue;
                uint32_t p = col->v[node->deps[k] - col->base];
                if (p != NONE && (best == NONE || p > best)) best = p;
            }
        }
        col->v[x - col->base] = best;
    }
    col->done = v + 1;
    return col;
}

/* Whether node u (< v) precedes node v: 1, 0, or -1 out of host memory. */
static int precedes(reach *r, uint32_t u, uint32_t v) {
    const mt_node *node = &r->d->nodes[v];
    for (uint32_t k = 0; k < node->num_deps; k++) /* the common case: an edge */
        if (node->deps[k] == u) return 1;
    const column *col = column_through(r, r->chain_of[u], v);
    if (!col) return -1;
    uint32_t p = col->v[v - col->base];
    return p != NONE && p >= r->pos[u];
}

/* ------------------------------------------------------------------ sorting */

typedef struct keyed {
    uint64_t key;
    uint64_t value;
} keyed;

/* Stable LSD radix sort by key, a byte at a time, skipping the bytes all keys share;
 * `tmp` has room for n. The result is in `a`. Linear: a graph's accesses are sorted at
 * every check, and qsort's comparisons cost more than the rest of the check. */
static void radix_sort(keyed *a, keyed *tmp, size_t n) {
    uint64_t all_or = 0, all_and = ~(uint64_t)0;
    for (size_t i = 0; i < n; i++) {
        all_or |= a[i].key;
        all_and &= a[i].key;
    }
    keyed *from = a, *to = tmp;
    for (unsigned shift = 0; shift < 64; shift += 8) {
        if ((((all_or ^ all_and) >> shift) & 0xff) == 0) continue; /* one value: in order */
        size_t count[257] = {0};
        for (size_t i = 0; i < n; i++) count[((from[i].key >> shift) & 0xff) + 1]++;
        for (unsigned b = 0; b < 256; b++) count[b + 1] += count[b];
        for (size_t i = 0; i < n; i++) to[count[(from[i].key >> shift) & 0xff]++] = from[i];
        keyed *t = from;
        from = to;
        to = t;
    }
    if (from != a) memcpy(a, from, n * sizeof *a);
}

/* ------------------------------------------------------------------ the sweep */

typedef struct report {
    uint32_t a, b; /* nodes, a < b */
    uint32_t mode_a, mode_b;
    uint64_t lo, hi;
} report;

typedef struct checker {
    const mt_dag *d;
    reach r;
    report *reports;
    size_t num_reports, cap_reports;
    /* one segment's accesses in node order, merged per node */
    access *seg;
    uint32_t *prev_writer;
    bool *clean;
    keyed *order; /* room for twice seg_cap: sorting by node */
    size_t seg_cap;
} checker;

static bool add_report(checker *k, const access *a, const access *b, uint64_t lo, uint64_t hi) {
    if (k->num_reports == MAX_REPORTS) return true;
    if (k->num_reports == k->cap_reports) {
        size_t cap = k->cap_reports ? k->cap_reports * 2 : 16;
        report *grown = realloc(k->reports, cap * sizeof *grown);
        if (!grown) return false;
        k->reports = grown;
        k->cap_reports = cap;
    }
    k->reports[k->num_reports++] = (report){a->node, b->node, a->mode, b->mode, lo, hi};
    return true;
}

/* The live accesses `live` of segment [lo, hi): every racing pair among them. */
static bool check_segment(checker *k, access *const *live, size_t num_live, uint64_t lo,
                          uint64_t hi) {
    bool writes = false;
    for (size_t i = 0; i < num_live && !writes; i++) writes = live[i]->mode & MODE_WRITE;
    if (!writes || num_live < 2) return true;
    if (num_live > k->seg_cap) {
        size_t cap = num_live * 2;
        access *seg = realloc(k->seg, cap * sizeof *seg);
        if (seg) k->seg = seg;
        uint32_t *prev = realloc(k->prev_writer, cap * sizeof *prev);
        if (prev) k->prev_writer = prev;
        bool *clean = realloc(k->clean, cap * sizeof *clean);
        if (clean) k->clean = clean;
        keyed *order = realloc(k->order, 2 * cap * sizeof *order);
        if (order) k->order = order;
        if (!seg || !prev || !clean || !order) return false;
        k->seg_cap = cap;
    }
    for (size_t i = 0; i < num_live; i++) k->order[i] = (keyed){live[i]->node, i};
    radix_sort(k->order, k->order + num_live, num_live);
    size_t m = 0; /* one access per node: a node's own buffers never race */
    for (size_t i = 0; i < num_live; i++) {
        const access *next = live[k->order[i].value];
        if (m && k->seg[m - 1].node == next->node) k->seg[m - 1].mode |= next->mode;
        else k->seg[m++] = *next;
    }
    if (m < 2) return true;
    uint32_t last_writer = NONE;
    for (uint32_t j = 0; j < m; j++) {
        const access *me = &k->seg[j];
        k->prev_writer[j] = last_writer;
        bool clean = true;
        if (me->mode & MODE_WRITE) {
            /* Every earlier access, back to a clean writer that precedes this one. */
            for (uint32_t i = j; i-- > 0;) {
                int before = precedes(&k->r, k->seg[i].node, me->node);
                if (before < 0) return false;
                if (!before) {
                    clean = false;
                    if (!add_report(k, &k->seg[i], me, lo, hi)) return false;
                } else if ((k->seg[i].mode & MODE_WRITE) && k->clean[i]) {
                    break;
                }
            }
            last_writer = j;
        } else {
            for (uint32_t i = k->prev_writer[j]; i != NONE; i = k->prev_writer[i]) {
                int before = precedes(&k->r, k->seg[i].node, me->node);
                if (before < 0) return false;
                if (!before) {
                    if (!add_report(k, &k->seg[i], me, lo, hi)) return false;
                } else if (k->clean[i]) {
                    break;
                }
            }
        }
        k->clean[j] = clean;
    }
    return true;
}

/* Sweep the accesses by address, checking each segment where the live set is constant.
 * An edge is an access's start or end: its address as the key, (access << 1) | start as
 * the value; ends come first at one address (ranges are half-open). */
static bool sweep(checker *k, const accesses *a) {
    size_t ne = a->n * 2;
    keyed *edges = malloc((ne ? ne : 1) * 2 * sizeof *edges);
    access **live = malloc((a->n ? a->n : 1) * sizeof *live);
    size_t *slot = malloc((a->n ? a->n : 1) * sizeof *slot); /* access -> index in live */
    bool ok = edges && live && slot;
    if (ok) {
        for (size_t i = 0; i < a->n; i++) {
            edges[i] = (keyed){a->v[i].hi, i << 1};
            edges[a->n + i] = (keyed){a->v[i].lo, i << 1 | 1};
        }
        radix_sort(edges, edges + ne, ne); /* stable: the ends stay first */
    }
    size_t num_live = 0;
    for (size_t e = 0; ok && e < ne;) {
        uint64_t at = edges[e].key;
        for (; e < ne && edges[e].key == at; e++) {
            size_t i = edges[e].value >> 1;
            if (edges[e].value & 1) {
                slot[i] = num_live;
                live[num_live++] = &a->v[i];
            } else {
                size_t s = slot[i];
                live[s] = live[--num_live];
                slot[live[s] - a->v] = s;
            }
        }
        if (num_live > 1 && e < ne) ok = check_segment(k, live, num_live, at, edges[e].key);
    }
    free(edges);
    free(live);
    free(slot);
    return ok;
}

static int by_pair(const void *x, const void *y) {
    const report *a = x, *b = y;
    if (a->a != b->a) return (a->a > b->a) - (a->a < b->a);
    if (a->b != b->b) return (a->b > b->b) - (a->b < b->b);
    return (a->lo > b->lo) - (a->lo < b->lo);
}

static void describe_side(const mt_dag *d, uint32_t node, uint32_t mode, mtiart_race_node *out) {
    memset(out, 0, sizeof *out);
    out->node = node;
    out->stream = d->nodes[node].stream_id;
    out->access = mode == (MODE_READ | MODE_WRITE) ? MTIART_ARG_BUFFER_INOUT
                  : mode == MODE_WRITE             ? MTIART_ARG_BUFFER_OUT
                                                   : MTIART_ARG_BUFFER_IN;
    mt_node_name(&d->nodes[node], out->name, sizeof out->name);
}

mtiart_status mt_dag_check_races(const mt_dag *d, mtiart_race *out, size_t cap, size_t *count) {
    if (cap && !out) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "races is NULL");
    MT_CHECK_NOT_NULL(count);
    if (d->num_nodes > UINT32_MAX / 2)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "graph too large");
    accesses a = {0};
    bool ok = true;
    for (size_t i = 0; ok && i < d->num_nodes; i++) ok = gather(&a, &d->nodes[i], (uint32_t)i, 0);
    checker k = {.d = d};
    ok = ok && reach_init(&k.r, d) && sweep(&k, &a);
    free(a.v);
    free(k.seg);
    free(k.prev_writer);
    free(k.clean);
    free(k.order);
    reach_free(&k.r);
    if (!ok) {
        free(k.reports);
        return mt_oom();
    }
    /* One race per pair and contiguous range: segments of one pair side by side merge. */
    if (k.num_reports) qsort(k.reports, k.num_reports, sizeof *k.reports, by_pair);
    size_t races = 0;
    for (size_t i = 0; i < k.num_reports; i++) {
        report *r = &k.reports[i];
        if (races) {
            report *last = &k.reports[races - 1];
            if (last->a == r->a && last->b == r->b && last->hi == r->lo &&
                last->mode_a == r->mode_a && last->mode_b == r->mode_b) {
                last->hi = r->hi;
                continue;
            }
        }
        k.reports[races++] = *r;
    }
    for (size_t i = 0; i < races && i < cap; i++) {
        const report *r = &k.reports[i];
        describe_side(d, r->a, r->mode_a, &out[i].first);
        describe_side(d, r->b, r->mode_b, &out[i].second);
        out[i].address = r->lo;
        out[i].bytes = r->hi - r->lo;
    }
    free(k.reports);
    *count = races;
    return MTIART_SUCCESS;
}

static const char *verb(uint32_t access) {
    return access == MTIART_ARG_BUFFER_INOUT ? "reads and writes"
           : access == MTIART_ARG_BUFFER_OUT ? "writes"
                                             : "reads";
}

mtiart_status mt_dag_refuse_races(const mt_dag *d) {
    mtiart_race race;
    size_t count;
    mtiart_status st = mt_dag_check_races(d, &race, 1, &count);
    if (st || !count) return st;
    char first[64], second[64];
    snprintf(first, sizeof first, race.first.stream ? ", stream %llu" : "",
             (unsigned long long)race.first.stream);
    snprintf(second, sizeof second, race.second.stream ? ", stream %llu" : "",
             (unsigned long long)race.second.stream);
    return mt_set_error(
        MTIART_ERROR_INVALID_VALUE,
        "the graph has %zu race%s: node %llu (%s%s) %s and node %llu (%s%s) %s "
        "%llu bytes at 0x%llx with no path between them%s",
        count, count == 1 ? "" : "s", (unsigned long long)race.first.node, race.first.name, first,
        verb(race.first.access), (unsigned long long)race.second.node, race.second.name, second,
        verb(race.second.access), (unsigned long long)race.bytes, (unsigned long long)race.address,
        count > 1 ? " (mtiart_graph_check_races lists them all)" : "");
}

MTIART_API mtiart_status mtiart_graph_check_races(mtiart_graph graph, mtiart_race *races,
                                                  size_t capacity, size_t *count) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    return mt_dag_check_races(g->dag, races, capacity, count);
}

/* ------------------------------------------------------------------ shared-pool replay order */

/* One pool's graphs, numbered in capture order, and how many graphs and executables hold
 * each: a graph nobody holds any more is skipped by the order. An entry goes when nothing
 * holds any of its graphs (a later capture into the pool starts a new order: no graph it
 * could be ordered against is left), so a program that keeps capturing keeps few. */
struct mt_pool_order {
    int device;
    mtiart_pool_id id;
    atomic_uint captures;
    uint32_t *holders; /* per graph, under orders_lock */
    size_t cap_holders;
    uint64_t held;                 /* the sum of holders, under orders_lock */
    int64_t last;                  /* graph launched last (-1: none yet), under orders_lock */
    atomic_int running;            /* replays of the pool's graphs running */
    atomic_int_least64_t last_run; /* graph that began running last */
    mt_pool_order *next;
};

static pthread_mutex_t orders_lock = PTHREAD_MUTEX_INITIALIZER;
static mt_pool_order *orders;
static pthread_mutex_t order_check_lock = PTHREAD_MUTEX_INITIALIZER;
static mtiart_pool_order_mode order_mode = MTIART_POOL_ORDER_WARN;
static mtiart_pool_order_fn order_fn;
static void *order_fn_data;

__attribute__((destructor)) static void free_orders(void) {
    pthread_mutex_lock(&orders_lock);
    for (mt_pool_order *o = orders, *next; o; o = next) {
        next = o->next;
        free(o->holders);
        free(o);
    }
    orders = NULL;
    pthread_mutex_unlock(&orders_lock);
}

MTIART_API mtiart_status mtiart_set_pool_order_check(mtiart_pool_order_mode mode,
                                                     mtiart_pool_order_fn fn, void *user_data) {
    MT_API_ENTRY();
    if ((unsigned)mode > MTIART_POOL_ORDER_OFF)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "unknown pool order mode %d", (int)mode);
    pthread_mutex_lock(&order_check_lock);
    order_mode = mode;
    order_fn = fn;
    order_fn_data = fn ? user_data : NULL;
    pthread_mutex_unlock(&order_check_lock);
    return MTIART_SUCCESS;
}

mt_pool_order *mt_pool_order_captured(mt_pool *pool, uint32_t *seq) {
    mtiart_pool_id id = mt_pool_id_of(pool);
    int device = mt_pool_device(pool);
    pthread_mutex_lock(&orders_lock);
    mt_pool_order *o = orders;
    while (o && !(o->device == device && o->id.first == id.first && o->id.second == id.second))
        o = o->next;
    if (!o && (o = calloc(1, sizeof *o))) {
        o->device = device;
        o->id = id;
        o->last = -1;
        atomic_init(&o->last_run, -1);
        o->next = orders;
        orders = o;
    }
    unsigned n = o ? atomic_load(&o->captures) : 0;
    if (o && n == o->cap_holders) {
        size_t cap = o->cap_holders ? o->cap_holders * 2 : 4;
        uint32_t *grown = realloc(o->holders, cap * sizeof *grown);
        if (!grown) o = NULL;
        else {
            o->holders = grown;
            o->cap_holders = cap;
        }
    }
    if (o) {
        o->holders[n] = 1; /* the graph */
        o->held++;
        *seq = n;
        atomic_store(&o->captures, n + 1);
    }
    pthread_mutex_unlock(&orders_lock);
    return o;
}

void mt_pool_order_hold(mt_pool_order *o, uint32_t seq, int delta) {
    pthread_mutex_lock(&orders_lock);
    o->holders[seq] = (uint32_t)((int)o->holders[seq] + delta);
    o->held = (uint64_t)((int64_t)o->held + delta);
    if (o->held == 0) {
        mt_pool_order **link = &orders;
        while (*link != o) link = &(*link)->next;
        *link = o->next;
        free(o->holders);
        free(o);
    }
    pthread_mutex_unlock(&orders_lock);
}

bool mt_pool_order_shared(const mt_pool_order *order) {
    return atomic_load_explicit(&order->captures, memory_order_relaxed) > 1;
}

/* Report a violation as the mode says; returns the mode it was handled in. */
static mtiart_pool_order_mode report_order(const mt_pool_order *o, const char *message) {
    pthread_mutex_lock(&order_check_lock);
    mtiart_pool_order_mode mode = order_mode;
    mtiart_pool_order_fn fn = order_fn;
    void *data = order_fn_data;
    pthread_mutex_unlock(&order_check_lock);
    if (mode == MTIART_POOL_ORDER_WARN) {
        if (fn) {
            const char *api = mt_api_suspend(); /* the callback's calls name their errors */
            fn(o->device, o->id, message, data);
            mt_api_resume(api);
        } else {
            fprintf(stderr, "libmtiart: warning: %s\n", message);
        }
    }
    return mode;
}

/* The first graph after `after` that something still holds (-1: none); orders_lock held. */
static int64_t next_held(const mt_pool_order *o, int64_t after) {
    unsigned n = atomic_load(&o->captures);
    for (int64_t k = after + 1; k < (int64_t)n; k++)
        if (o->holders[k]) return k;
    return -1;
}

mtiart_status mt_pool_order_launch(mt_pool_order *o, uint32_t seq, uint64_t stream_id) {
    pthread_mutex_lock(&orders_lock);
    int64_t last = o->last, first = next_held(o, -1), next = next_held(o, last);
    /* What may follow: the first graph (a new round), the last one again, the next one. */
    if (last < 0 || seq == first || seq == last || seq == next) {
        o->last = seq;
        pthread_mutex_unlock(&orders_lock);
        return MTIART_SUCCESS;
    }
    pthread_mutex_unlock(&orders_lock);
    char expected[96];
    int len = snprintf(expected, sizeof expected, "graph %lld", (long long)first);
    if (last != first)
        len += snprintf(expected + len, sizeof expected - (size_t)len,
                        next > last ? ", %lld" : " or %lld", (long long)last);
    if (next > last)
        snprintf(expected + len, sizeof expected - (size_t)len, " or %lld", (long long)next);
    char message[MT_FAILURE_MAX];
    snprintf(message, sizeof message,
             "out-of-order replay on stream %llu: graph %u of the %u graphs captured into "
             "shared pool (%llu, %llu) on device %d launched after graph %lld (expected %s): "
             "its memory may hold what another graph of the pool left there; graphs sharing "
             "a pool must be replayed in capture order",
             (unsigned long long)stream_id, seq, atomic_load(&o->captures),
             (unsigned long long)o->id.first, (unsigned long long)o->id.second, o->device,
             (long long)last, expected);
    mtiart_pool_order_mode mode = report_order(o, message);
    if (mode == MTIART_POOL_ORDER_ERROR)
        return mt_set_error(MTIART_ERROR_NOT_PERMITTED, "%s", message);
    pthread_mutex_lock(&orders_lock);
    o->last = seq;
    pthread_mutex_unlock(&orders_lock);
    return MTIART_SUCCESS;
}

bool mt_pool_order_enter(mt_pool_order *o, uint32_t seq, uint64_t stream_id, char *failure,
                         size_t cap) {
    int64_t other = atomic_exchange(&o->last_run, seq);
    if (atomic_fetch_add(&o->running, 1) == 0) return true;
    snprintf(failure, cap,
             "concurrent replay on stream %llu: graph %u of shared pool (%llu, %llu) on "
             "device %d started while graph %lld of the pool was running; graphs "
             "sharing a pool must never be replayed concurrently",
             (unsigned long long)stream_id, seq, (unsigned long long)o->id.first,
             (unsigned long long)o->id.second, o->device, (long long)other);
    if (report_order(o, failure) != MTIART_POOL_ORDER_ERROR) return true;
    atomic_fetch_sub(&o->running, 1);
    return false;
}

void mt_pool_order_leave(mt_pool_order *o) { atomic_fetch_sub(&o->running, 1); }
