/*
 * Executable graphs. Instantiation turns the DAG into a flat plan:
 *   - nodes are grouped into chains (a node with one predecessor continues that
 *     predecessor's chain if the chain still ends there) and laid out chain by chain,
 *     so a chain runs as a plain loop over an array without atomics;
 *   - each chain is a task with a count of unfinished predecessors; a node records the
 *     other tasks it releases when it finishes;
 *   - a pure chain (one task) replays as one loop on the launching worker; otherwise the
 *     ready tasks sit in an array that all workers of the device take batches from;
 *   - the layout is a topological order, so a plan whose replays are short runs as one
 *     loop too: waking helpers and sharing counters with them costs more than a few
 *     microseconds of work gains (see learn_replay_time).
 * A launch is one stream operation. Replays of one executable never overlap.
 */
#include "internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct xnode {
    mtiart_kernel_fn fn; /* NULL for anything that is not a single-block kernel */
    void **argv;
    uint32_t succ_begin, succ_end; /* tasks released after this node, in x->succ */
    mt_op *op;
    uint32_t graph_index;
    uint32_t pad;
} xnode;

/* Laid out by who writes what during replays: the plan (read-only once built), the
 * reference count and the launch state (a launching thread), the replay state (the
 * replaying workers), each on lines of their own, so a launch does not pull the lines a
 * replay reads away from the worker that will run it. */
struct mt_exec {
    uint64_t handle;
    mt_device *dev;
    mt_pool *pool;
    size_t num_graph_nodes; /* of the graph it was made from */
    size_t num_nodes;       /* of the plan: fewer when nodes were fused */
    xnode *nodes;
    mt_op *ops;
    void **argv_store;
    uint32_t num_tasks;
    uint32_t *task_begin; /* num_tasks + 1 offsets into nodes */
    uint32_t *succ;
    uint32_t *initial_pending;
    uint32_t *roots;
    uint32_t num_roots;
    mt_event **external; /* events waited for at launch */
    size_t num_external;
    mt_event *done;
    atomic_int refcount MT_ALIGNED;
    mt_spinlock launch_lock MT_ALIGNED;
    uint64_t last_stream_id;
    /* replay state (replays never overlap) */
    atomic_uint *pending MT_ALIGNED;
    uint32_t *queue;
    atomic_uint *stamps;
    atomic_uint queue_reserved MT_ALIGNED;
    atomic_int sleepers;    /* helpers asleep in wait_for_tasks or wait_for_stamp */
    atomic_uint task_wakes; /* futex of wait_for_tasks: bumped by each wake */
    atomic_uint queue_head MT_ALIGNED;
    atomic_uint remaining MT_ALIGNED;
    uint32_t epoch;
    uint32_t replays;  /* counts replays, to time one in REPLAY_TIMING_PERIOD */
    bool parallel;     /* replays of several tasks share them with helpers */
    atomic_int failed; /* the replay's first failure (node_failed) */
    int32_t failure_code;
    char failure[MT_FAILURE_MAX + 32]; /* "graph node N: " + the node's failure */
};

void mt_exec_ref(mt_exec *x) { atomic_fetch_add_explicit(&x->refcount, 1, memory_order_relaxed); }

static void exec_free(mt_exec *x) {
    if (x->ops)
        for (size_t i = 0; i < x->num_nodes; i++) mt_op_release(&x->ops[i]);
    for (size_t i = 0; i < x->num_external; i++) mt_event_unref(x->external[i]);
    if (x->done) mt_event_unref(x->done);
    if (x->pool) mt_pool_release(x->pool);
    free(x->nodes);
    free(x->ops);
    free(x->argv_store);
    free(x->task_begin);
    free(x->succ);
    free(x->initial_pending);
    free(x->roots);
    free(x->external);
    free(x->pending);
    free(x->queue);
    free(x->stamps);
    free(x);
}

void mt_exec_unref(mt_exec *x) {
    if (atomic_fetch_sub_explicit(&x->refcount, 1, memory_order_acq_rel) == 1) exec_free(x);
}

mt_event *mt_exec_done_event(mt_exec *x) { return x->done; }

static void release_exec(void *x) { mt_exec_unref(x); }

/* ------------------------------------------------------------------ replay */

/* The first node of this replay that failed wins; later failures are dropped, as a
 * stream's sticky error keeps its first. Nodes run on several workers at once. */
static void node_failed(mt_exec *x, const xnode *n, int32_t code, const char *failure) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&x->failed, &expected, 1)) return;
    x->failure_code = code;
    snprintf(x->failure, sizeof x->failure, "graph node %u: %s", n->graph_index, failure);
}

static __attribute__((noinline, cold)) void kernel_failed(mt_exec *x, xnode *n, int32_t rc) {
    char failure[MT_FAILURE_MAX];
    mt_describe_failure(n->fn, rc, NULL, failure, sizeof failure);
    node_failed(x, n, rc, failure);
}

/* Anything but a single-block kernel: out of the loops below, which keep to one call. */
static __attribute__((noinline)) void run_op_node(mt_exec *x, xnode *n) {
    char failure[MT_FAILURE_MAX];
    int32_t rc = mt_op_run(x->dev, n->op, n->argv, failure, sizeof failure);
    if (MT_UNLIKELY(rc != 0)) node_failed(x, n, rc, failure);
}

static inline void run_node(mt_exec *x, xnode *n) {
    mtiart_kernel_fn fn = n->fn;
    if (MT_LIKELY(fn != NULL)) { /* a single-block kernel: called directly */
        int32_t rc = fn(n->argv, 0, 1);
        if (MT_UNLIKELY(rc != 0)) kernel_failed(x, n, rc);
    } else {
        run_op_node(x, n);
    }
}

/* Wake the helpers asleep in wait_for_tasks (and in wait_for_stamp for queue entry
 * `slot`, unless UINT32_MAX). The futex word changes before the wake: a helper between
 * its last look and its sleep would otherwise sleep through it. */
static void wake_helpers(mt_exec *x, uint32_t slot) {
    atomic_fetch_add(&x->task_wakes, 1);
    mt_futex_wake(&x->task_wakes, INT_MAX);
    if (slot != UINT32_MAX) mt_futex_wake(&x->stamps[slot], INT_MAX);
}

static void release_task(mt_exec *x, uint32_t task) {
    if (atomic_fetch_sub_explicit(&x->pending[task], 1, memory_order_acq_rel) != 1) return;
    uint32_t slot = atomic_fetch_add(&x->queue_reserved, 1);
    x->queue[slot] = task;
    /* seq_cst store then load of sleepers: pairs with a helper's increment of sleepers
     * then re-check in the waits below, so a wake cannot be missed. */
    atomic_store(&x->stamps[slot], x->epoch);
    if (MT_UNLIKELY(atomic_load(&x->sleepers))) wake_helpers(x, slot);
}

/* No task is ready to take (the queue holds `seen` entries, all taken) but the replay is
 * not over: spin for as long as such waits take on the device, then sleep until a task is
 * released or the last one finishes. */
static void wait_for_tasks(mt_exec *x, uint32_t seen) {
    mt_spin_budget *budget = &x->dev->job_budget;
    uint64_t spin = mt_spin_budget_ns(budget);
    uint64_t start = spin ? mt_now_ns() : 0;
    for (unsigned i = 1; spin; i++) {
        if (atomic_load_explicit(&x->queue_reserved, memory_order_acquire) != seen ||
            !atomic_load_explicit(&x->remaining, memory_order_acquire))
            goto done;
        mt_cpu_relax();
        if ((i & 15) == 0 && mt_now_ns() - start >= spin) break;
    }
    unsigned wakes = atomic_load(&x->task_wakes);
    atomic_fetch_add(&x->sleepers, 1);
    if (atomic_load(&x->queue_reserved) == seen && atomic_load(&x->remaining))
        mt_futex_wait(&x->task_wakes, wakes);
    atomic_fetch_sub(&x->sleepers, 1);
done:
    if (spin) mt_spin_budget_learn(budget, mt_now_ns() - start, mt_spin_ns);
}

/* Queue entry i is reserved by a release that has not published its task yet. */
static void wait_for_stamp(mt_exec *x, uint32_t i) {
    for (unsigned spins = 0; spins < 64 && !mt_waits_block; spins++) {
        if (atomic_load_explicit(&x->stamps[i], memory_order_acquire) == x->epoch) return;
        mt_cpu_relax();
    }
    for (unsigned seen; (seen = atomic_load(&x->stamps[i])) != x->epoch;) {
        atomic_fetch_add(&x->sleepers, 1);
        if (atomic_load(&x->stamps[i]) == seen) mt_futex_wait(&x->stamps[i], seen);
        atomic_fetch_sub(&x->sleepers, 1);
    }
}

/* Nodes [begin, end) of the plan, in order: a chain, or the whole plan run alone. */
static void run_in_order(mt_exec *x, uint32_t begin, uint32_t end) {
    for (xnode *n = &x->nodes[begin], *last = &x->nodes[end]; n < last; n++) run_node(x, n);
}

/* A task shared with helpers: its chain, releasing the tasks that wait for its nodes. */
static void run_task(mt_exec *x, uint32_t task) {
    for (xnode *n = &x->nodes[x->task_begin[task]], *last = &x->nodes[x->task_begin[task + 1]];
         n < last; n++) {
        run_node(x, n);
        for (uint32_t k = n->succ_begin; k < n->succ_end; k++) release_task(x, x->succ[k]);
    }
}

typedef struct graph_job {
    mt_job base;
    mt_exec *x;
} graph_job;

static void graph_job_help(mt_job *base) {
    mt_exec *x = ((graph_job *)base)->x;
    const uint32_t workers = (uint32_t)x->dev->num_workers;
    while (atomic_load_explicit(&x->remaining, memory_order_acquire) != 0) {
        uint32_t head = atomic_load_explicit(&x->queue_head, memory_order_relaxed);
        uint32_t reserved = atomic_load_explicit(&x->queue_reserved, memory_order_acquire);
        if (head >= reserved) {
            wait_for_tasks(x, reserved);
            continue;
        }
        /* Batches amortise the shared counters; they shrink as the queue drains so all
         * workers stay busy. */
        uint32_t take = (reserved - head) / (2 * workers);
        if (take < 1) take = 1;
        if (take > 32) take = 32;
        if (!atomic_compare_exchange_weak_explicit(&x->queue_head, &head, head + take,
                                                   memory_order_acq_rel, memory_order_relaxed))
            continue;
        for (uint32_t i = head; i < head + take; i++) {
            wait_for_stamp(x, i);
            run_task(x, x->queue[i]);
        }
        /* The last task done: helpers asleep for more can leave. */
        if (atomic_fetch_sub(&x->remaining, take) == take && atomic_load(&x->sleepers))
            wake_helpers(x, UINT32_MAX);
    }
}

/* A replay of several tasks shared with the device's other workers. */
static void run_shared(mt_exec *x) {
    if (++x->epoch == 0) {
        for (uint32_t i = 0; i < x->num_tasks; i++)
            atomic_store_explicit(&x->stamps[i], 0, memory_order_relaxed);
        x->epoch = 1;
    }
    for (uint32_t t = 0; t < x->num_tasks; t++)
        atomic_store_explicit(&x->pending[t], x->initial_pending[t], memory_order_relaxed);
    for (uint32_t i = 0; i < x->num_roots; i++) {
        x->queue[i] = x->roots[i];
        atomic_store_explicit(&x->stamps[i], x->epoch, memory_order_relaxed);
    }
    atomic_store_explicit(&x->queue_head, 0, memory_order_relaxed);
    atomic_store_explicit(&x->remaining, x->num_tasks, memory_order_relaxed);
    atomic_store_explicit(&x->queue_reserved, x->num_roots, memory_order_release);
    graph_job job = {.base = {graph_job_help}, .x = x};
    /* Two chains in a row (one root, two tasks) gain nothing from helpers. */
    mt_job_slot *slot =
        x->num_roots > 1 || x->num_tasks > 2 ? mt_job_post(x->dev, &job.base) : NULL;
    graph_job_help(&job.base);
    mt_job_retire(x->dev, slot);
}

/* Whether the next replays share their tasks with helpers, from how long a replay took:
 * above REPLAY_PARALLEL_NS run alone, they go parallel; below REPLAY_SERIAL_NS shared,
 * back to one loop (the gap keeps a plan near the threshold from flip-flopping). Every
 * REPLAY_TIMING_PERIOD-th replay is timed, the first one included: two clock reads cost
 * as much as a few empty nodes. */
#define REPLAY_PARALLEL_NS 20000
#define REPLAY_SERIAL_NS 8000
#define REPLAY_TIMING_PERIOD 16

static void learn_replay_time(mt_exec *x, uint64_t ns) {
    if (x->parallel) x->parallel = ns >= REPLAY_SERIAL_NS;
    else x->parallel = ns > REPLAY_PARALLEL_NS;
}

int32_t mt_exec_run(mt_exec *x, char *failure, size_t cap) {
    atomic_store_explicit(&x->failed, 0, memory_order_relaxed);
    if (x->num_tasks <= 1 || x->dev->num_workers <= 1) {
        run_in_order(x, 0, (uint32_t)x->num_nodes);
    } else {
        bool timed = x->replays++ % REPLAY_TIMING_PERIOD == 0;
        uint64_t start = timed ? mt_now_ns() : 0;
        if (x->parallel) run_shared(x);
        else run_in_order(x, 0, (uint32_t)x->num_nodes);
        if (timed) learn_replay_time(x, mt_now_ns() - start);
    }
    if (MT_LIKELY(!atomic_load_explicit(&x->failed, memory_order_acquire))) return 0;
    snprintf(failure, cap, "%s", x->failure);
    return x->failure_code;
}

/* ------------------------------------------------------------------ instantiation */

static mtiart_status build_plan(mt_exec *x, mt_graph *g) {
    size_t n = g->num_nodes;
    uint32_t *chain_of = malloc((n ? n : 1) * sizeof *chain_of);
    uint32_t *chain_tail = malloc((n ? n : 1) * sizeof *chain_tail);
    uint32_t *order = malloc((n ? n : 1) * sizeof *order);       /* layout position -> node */
    uint32_t *position = malloc((n ? n : 1) * sizeof *position); /* node -> layout position */
    uint32_t *next_in_chain = malloc((n ? n : 1) * sizeof *next_in_chain);
    uint32_t *chain_head = malloc((n ? n : 1) * sizeof *chain_head);
    uint32_t *succ_count = calloc(n ? n : 1, sizeof *succ_count);
    mtiart_status st = MTIART_SUCCESS;
    if (!chain_of || !chain_tail || !order || !position || !next_in_chain || !chain_head ||
        !succ_count)
        goto oom;
    uint32_t chains = 0;
    for (size_t v = 0; v < n; v++) {
        next_in_chain[v] = UINT32_MAX;
        mt_node *node = &g->nodes[v];
        if (node->num_deps == 1) {
            uint32_t u = (uint32_t)node->deps[0];
            uint32_t c = chain_of[u];
            if (chain_tail[c] == u) {
                chain_of[v] = c;
                chain_tail[c] = (uint32_t)v;
                next_in_chain[u] = (uint32_t)v;
                continue;
            }
        }
        chain_of[v] = chains;
        chain_head[chains] = (uint32_t)v;
        chain_tail[chains] = (uint32_t)v;
        chains++;
    }
    x->num_tasks = chains;
    x->task_begin = malloc((chains + 1) * sizeof *x->task_begin);
    x->initial_pending = malloc((chains ? chains : 1) * sizeof *x->initial_pending);
    x->roots = malloc((chains ? chains : 1) * sizeof *x->roots);
    x->pending = malloc((chains ? chains : 1) * sizeof *x->pending);
    x->queue = malloc((chains ? chains : 1) * sizeof *x->queue);
    x->stamps = calloc(chains ? chains : 1, sizeof *x->stamps);
    if (!x->task_begin || !x->initial_pending || !x->roots || !x->pending || !x->queue ||
        !x->stamps)
        goto oom;
    uint32_t pos = 0;
    for (uint32_t c = 0; c < chains; c++) {
        x->task_begin[c] = pos;
        for (uint32_t v = chain_head[c]; v != UINT32_MAX; v = next_in_chain[v]) {
            order[pos] = v;
            position[v] = pos++;
        }
        x->initial_pending[c] = g->nodes[chain_head[c]].num_deps;
        if (x->initial_pending[c] == 0) x->roots[x->num_roots++] = c;
    }
    x->task_begin[chains] = pos;
    /* Edges that leave a chain become task releases on the predecessor node. */
    size_t total = 0;
    for (size_t v = 0; v < n; v++)
        for (uint32_t d = 0; d < g->nodes[v].num_deps; d++) {
            uint32_t u = (uint32_t)g->nodes[v].deps[d];
            if (next_in_chain[u] != v) {
                succ_count[u]++;
                total++;
            }
        }
    x->succ = malloc((total ? total : 1) * sizeof *x->succ);
    if (!x->succ) goto oom;
    uint32_t offset = 0;
    for (uint32_t p = 0; p < n; p++) {
        uint32_t u = order[p];
        x->nodes[p].succ_begin = x->nodes[p].succ_end = offset;
        offset += succ_count[u];
    }
    for (size_t v = 0; v < n; v++)
        for (uint32_t d = 0; d < g->nodes[v].num_deps; d++) {
            uint32_t u = (uint32_t)g->nodes[v].deps[d];
            if (next_in_chain[u] != v) {
                xnode *xn = &x->nodes[position[u]];
                x->succ[xn->succ_end++] = chain_of[v];
            }
        }
    /* Lay the ops and argument vectors out in plan order. */
    size_t argv_total = 0;
    for (size_t v = 0; v < n; v++)
        if (g->nodes[v].op.type == MT_OP_KERNEL) {
            uint16_t count;
            memcpy(&count, mt_op_blob(&g->nodes[v].op), 2);
            argv_total += count;
        }
    x->argv_store = malloc((argv_total ? argv_total : 1) * sizeof *x->argv_store);
    if (!x->argv_store) goto oom;
    size_t argv_used = 0;
    for (uint32_t p = 0; p < n; p++) {
        uint32_t v = order[p];
        mt_op *op = &x->ops[p];
        /* Ops not reached (or not cloned) stay EMPTY, harmless for exec_free. */
        st = mt_op_clone(op, &g->nodes[v].op);
        if (st) goto done;
        xnode *xn = &x->nodes[p];
        xn->op = op;
        xn->graph_index = v;
        xn->fn = NULL;
        if (op->type == MT_OP_KERNEL) {
            xn->argv = &x->argv_store[argv_used];
            argv_used += mt_blob_argv(mt_op_blob(op), xn->argv);
            if (op->num_blocks == 1) xn->fn = op->fn.kernel;
        }
        if (op->type == MT_OP_EVENT_WAIT && op->u.event.event) {
            mt_event **grown = realloc(x->external, (x->num_external + 1) * sizeof *grown);
            if (!grown) goto oom;
            x->external = grown;
            mt_event_ref(op->u.event.event);
            x->external[x->num_external++] = op->u.event.event;
        }
    }
    goto done;
oom:
    st = mt_oom();
done:
    free(chain_of);
    free(chain_tail);
    free(order);
    free(position);
    free(next_in_chain);
    free(chain_head);
    free(succ_count);
    return st;
}

/* Build the executable of g (whose lock is held) from `plan`: g itself, or the copy the
 * fusion pass made of it. */
static mtiart_status instantiate_plan(mt_graph *g, mt_graph *plan, const uint32_t *origin,
                                      mtiart_graph_exec *exec) {
    mt_exec *x =
        aligned_alloc(MT_CACHELINE, (sizeof *x + MT_CACHELINE - 1) / MT_CACHELINE * MT_CACHELINE);
    MT_CHECK_ALLOC(x);
    memset(x, 0, sizeof *x);
    atomic_init(&x->refcount, 1);
    x->dev = g->dev;
    x->num_graph_nodes = g->num_nodes;
    x->num_nodes = plan->num_nodes;
    x->nodes = calloc(plan->num_nodes ? plan->num_nodes : 1, sizeof *x->nodes);
    x->ops = calloc(plan->num_nodes ? plan->num_nodes : 1, sizeof *x->ops);
    x->done = mt_event_new(MTIART_EVENT_DEFAULT);
    if (!x->nodes || !x->ops || !x->done) {
        exec_free(x);
        return mt_oom();
    }
    for (size_t i = 0; i < plan->num_nodes; i++) x->ops[i].type = MT_OP_EMPTY;
    mtiart_status st = build_plan(x, plan);
    if (st) {
        exec_free(x);
        return st;
    }
    /* Failures name the captured node a fused one starts at. */
    if (origin)
        for (size_t i = 0; i < x->num_nodes; i++)
            x->nodes[i].graph_index = origin[x->nodes[i].graph_index];
    if (g->pool) {
        mt_pool_retain(g->pool);
        x->pool = g->pool;
    }
    st = mt_handle_register(x, MT_KIND_EXEC, release_exec, &x->handle);
    if (st) return st;
    *exec = (mtiart_graph_exec)(uintptr_t)x->handle;
    return MTIART_SUCCESS;
}

static mtiart_status instantiate(mt_graph *g, uint32_t flags, mtiart_graph_exec *exec) {
    MT_CHECK_NOT_NULL(exec);
    if (flags & ~(uint32_t)(MTIART_INSTANTIATE_NO_FUSION | MTIART_INSTANTIATE_FUSION) ||
        (flags & MTIART_INSTANTIATE_NO_FUSION && flags & MTIART_INSTANTIATE_FUSION))
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "invalid instantiate flags 0x%x", flags);
    if (g->num_nodes > UINT32_MAX / 2)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "graph too large");
    bool fuse = flags & MTIART_INSTANTIATE_FUSION      ? true
                : flags & MTIART_INSTANTIATE_NO_FUSION ? false
                                                       : mt_graph_fusion;
    mt_graph *fused = NULL;
    uint32_t *origin = NULL;
    if (fuse) {
        mtiart_status st = mt_fuse_plan(g, &fused, &origin);
        if (st) return st;
    }
    mtiart_status st = instantiate_plan(g, fused ? fused : g, origin, exec);
    if (fused) mt_graph_free(fused);
    free(origin);
    return st;
}

MTIART_API mtiart_status mtiart_graph_instantiate(mtiart_graph graph, mtiart_graph_exec *exec) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    return instantiate(g, MTIART_INSTANTIATE_DEFAULT, exec);
}

MTIART_API mtiart_status mtiart_graph_instantiate_with_flags(mtiart_graph graph, uint32_t flags,
                                                             mtiart_graph_exec *exec) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    return instantiate(g, flags, exec);
}

MTIART_API mtiart_status mtiart_graph_exec_destroy(mtiart_graph_exec exec) {
    MT_API_ENTRY();
    LOOKUP_EXEC(x, exec);
    if (!mt_handle_retire(&x_pin))
        return mt_set_error(MTIART_ERROR_INVALID_HANDLE, "graph exec destroyed concurrently");
    return MTIART_SUCCESS; /* launches still in flight hold their own references */
}

MTIART_API mtiart_status mtiart_graph_exec_get_node_count(mtiart_graph_exec exec, size_t *count) {
    MT_API_ENTRY();
    LOOKUP_EXEC(x, exec);
    MT_CHECK_NOT_NULL(count);
    *count = x->num_graph_nodes;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_graph_launch(mtiart_graph_exec exec, mtiart_stream stream) {
    MT_API_ENTRY();
    LOOKUP_EXEC(x, exec);
    LOOKUP_STREAM(s, stream);
    if (s->dev != x->dev)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "graph belongs to device %d, the stream to device %d", x->dev->index,
                            s->dev->index);
    if (atomic_load(&s->capture))
        return mt_set_error(MTIART_ERROR_NOT_SUPPORTED,
                            "launching a graph on a capturing stream (a child graph) is "
                            "not supported");
    mt_spin_lock(&x->launch_lock);
    mtiart_status st = MTIART_SUCCESS;
    /* On another stream than the previous launch, wait for that launch to finish. */
    if (x->last_stream_id != s->id)
        st = mt_stream_enqueue_wait(s, x->done, atomic_load(&x->done->recorded));
    /* Waits on events recorded outside the capture are hoisted to the launch. */
    for (size_t i = 0; i < x->num_external && st == MTIART_SUCCESS; i++)
        st = mt_stream_enqueue_wait(s, x->external[i], atomic_load(&x->external[i]->recorded));
    if (st == MTIART_SUCCESS) {
        mt_op op = {.type = MT_OP_GRAPH, .num_blocks = 1};
        mt_exec_ref(x);
        op.u.graph.exec = x;
        op.u.graph.generation = atomic_load(&x->done->recorded) + 1;
        /* Straight into the queue, as the waits above: a capture the stream began since
         * the check comes after this launch. */
        st = mt_stream_enqueue(s, &op);
        if (st == MTIART_SUCCESS) {
            atomic_store(&x->done->recorded, op.u.graph.generation);
            x->last_stream_id = s->id;
        }
    }
    mt_spin_unlock(&x->launch_lock);
    return st;
}
