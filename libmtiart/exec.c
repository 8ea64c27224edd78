/*
 * Executable graphs. Instantiation flattens child graphs into their parents (a child's
 * roots depend on what the child node depended on, and the child node's dependents on its
 * sinks) and turns the DAG into a flat plan:
 *   - nodes are grouped into chains (a node with one predecessor continues that
 *     predecessor's chain if the chain still ends there) and laid out chain by chain,
 *     so a chain runs as a plain loop over an array without atomics;
 *   - each chain is a task with a count of unfinished predecessors; a node records the
 *     other tasks it releases when it finishes;
 *   - a pure chain (one task) replays as one loop on the launching worker; otherwise the
 *     ready tasks sit in an array that all workers of the device take batches from;
 *   - the layout is a topological order, so a plan without wait nodes whose replays are
 *     short runs as one loop too: waking helpers and sharing counters with them costs
 *     more than a few microseconds of work gains (see learn_replay_time).
 * Before that, the fusion pass (fuse.c) may let one launch stand for a chain of kernel
 * nodes; an update of such a chain makes its launch anew (or is refused if the new
 * parameters do not fuse).
 * A launch is one stream operation. Replays of one graph never overlap, whichever of its
 * executables they use (mt_replay_order).
 *
 * Event nodes. Every record and wait node has a slot: a launch reserves the generation
 * each record node completes (as an eager record reserves at enqueue, so that work
 * launched after the replay and waiting on the event waits for it) and snapshots the
 * record each wait node waits for: the most recent one made before the launch. A wait
 * whose record has not completed stops its task there; the rest of the replay runs on,
 * and when nothing else can, the replay is suspended: its stream parks on the event as
 * for an eager wait, holding no worker, and the replay resumes where it stopped.
 *
 * Conditional nodes run their body's own plan, once (IF) or while the flag is set (WHILE).
 *
 * Updates (mtiart_graph_exec_update and the setters) change the executable's template at
 * once and its plan at the start of the first replay launched after them, so that replays
 * launched before keep the parameters they were launched with.
 */
#include "internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

/* Generations of a launch's event slots that fit in the GRAPH op itself. */
#define INLINE_SLOTS (MT_OP_INLINE_BYTES / sizeof(uint64_t))
#define NONE UINT32_MAX

/* What a replay calls for a node, apart from the rest of the node (xnode) so that a chain's
 * loop reads 16 bytes per node. */
typedef struct xcall {
    mtiart_kernel_fn fn; /* NULL for anything that is not a single-block kernel */
    void **argv;
} xcall;

typedef struct xnode {
    uint32_t succ_begin, succ_end; /* tasks released after this node, in x->succ */
    mt_op *op;
    uint32_t origin; /* where the node is in the graph (see node_path) */
    uint32_t slot;   /* event nodes: index into the launch's generations */
} xnode;

/* A node of the instantiated graph, in a flattened child graph or not: the node at `index`
 * of the graph of origin entry `parent` (NONE: the top-level graph). */
typedef struct origin {
    uint32_t parent;
    uint32_t index;
} origin;

/* A task stopped at a wait node, resumed once the wait's record completes. */
typedef struct deferral {
    uint32_t task, pos;
    bool resumed;
} deferral;

struct mt_plan {
    mt_device *dev;
    const char *label; /* how messages name a node: "graph node", "body node" */
    uint32_t num_nodes;
    xnode *nodes;
    xcall *calls;          /* per position, as nodes */
    uint32_t num_indirect; /* positions whose call has no fn (they go through run_other) */
    mt_op *ops;
    void **argv_store;
    uint32_t *position; /* flattened node -> position in the plan */
    origin *origins;    /* NULL when nothing was flattened: node i's origin is node i */
    uint32_t *top_flat; /* top-level node -> flattened node (NONE: a child); NULL: same */
    uint32_t num_tasks;
    uint32_t *task_begin; /* num_tasks + 1 offsets into nodes */
    uint32_t *succ;
    uint32_t *initial_pending;
    uint32_t *roots;
    uint32_t num_roots;
    uint32_t num_waits;
    size_t num_patchable; /* nodes an update may patch: these and those of bodies */
    uint32_t num_flat;    /* flattened nodes: num_nodes, or more when nodes were fused */
    /* Fused chains (fuse.c): per flattened node its chain or NONE (NULL: none); chain k
     * is flattened nodes fused_members[fused_begin[k] .. fused_begin[k + 1]). */
    uint32_t num_fused;
    uint32_t *fused_group, *fused_begin, *fused_members;
    uint16_t *fused_nargs; /* chain k's launch takes them: its argv has room for no more */
    /* replay state (replays never overlap) */
    atomic_uint *pending;
    uint32_t *queue; /* tasks, then resumed deferrals as num_tasks + index */
    atomic_uint *stamps;
    deferral *deferred;
    atomic_uint num_deferred;
    uint32_t num_resumed;
    const uint64_t *slots; /* the running launch's event generations */
    mt_record_fn record;
    atomic_uint queue_reserved MT_ALIGNED;
    atomic_int sleepers;    /* helpers asleep in wait_for_tasks or wait_for_stamp */
    atomic_uint task_wakes; /* futex of wait_for_tasks: bumped by each wake */
    atomic_uint queue_head MT_ALIGNED;
    atomic_uint processed MT_ALIGNED; /* queue entries finished or deferred */
    uint32_t epoch;
    uint32_t replays;  /* counts replays, to time one in REPLAY_TIMING_PERIOD */
    bool parallel;     /* replays of several tasks share them with helpers */
    atomic_int failed; /* the replay's first failure (node_failed) */
    int32_t failure_code;
    char failure[MT_FAILURE_MAX + 64]; /* "graph node N: " + the node's failure */
    /* for traces: the dag node each position runs (the top-level plan holds `src_dag`,
     * whose nodes' bodies hold those of flattened children and conditional bodies) and,
     * per position, its predecessors captured by another stream (xpred[xpred_begin[p] ..
     * xpred_begin[p + 1]]) */
    mt_dag *src_dag;
    const mt_node **src;
    uint32_t *xpred_begin, *xpred;
    mt_trace_node_rec trace; /* the running replay's, when `tracing` */
    bool tracing;
};

/* Where a new op of an update goes. */
typedef struct patch_target {
    mt_plan *plan;
    uint32_t pos;
} patch_target;

/* New parameters of plan nodes, applied by the replay of generation `generation`: ops[i]
 * (owned until it is moved into the plan) replaces targets[i]'s. */
typedef struct update {
    uint64_t generation;
    mt_op *ops;
    patch_target *targets;
    size_t count, cap;
    struct update *next;
} update;

struct mt_exec {
    uint64_t handle;
    mt_device *dev;
    mt_pool *pool;
    mt_pool **update_pools; /* pools of graphs this was updated from */
    size_t num_update_pools;
    mt_plan *plan;
    pthread_mutex_t lock; /* tmpl, updates being made */
    mt_dag *tmpl;         /* the graph this runs, parameters of the latest update */
    uint32_t num_slots;
    mt_event **slot_event; /* changed under the order's lock */
    bool *slot_record;
    uint64_t *launch_slots; /* a launch's generations, under the order's lock */
    mt_replay_order *order; /* shared with the graph and its other executables */
    mt_event *done;         /* order->done, which the worker completes without the order's line */
    uint64_t flags;         /* MTIART_GRAPH_INSTANTIATE_* */
    /* The memory its nodes use: held, and checked at launch. Replaced (under `lock`) by
     * updates and setters; the records replaced stay until the executable goes, since
     * replays launched before keep using what they named. */
    _Atomic(mt_graph_mem *) mem;
    mt_graph_mem **retired_mem;
    size_t num_retired_mem;
    mt_mem_node *mem_nodes; /* its memory nodes, which a launch accounts for */
    size_t num_mem_nodes;
    bool suspended;        /* the worker's: a replay waits for a record */
    mt_bindings *bindings; /* instantiated from a loaded graph with inputs or outputs */
    atomic_uint_least64_t trace_session; /* the last trace that holds it (mt_trace_hold) */
    mt_spinlock update_lock;
    atomic_int has_updates;
    update *updates, *updates_tail;
    mt_pool_order *pool_order; /* of the graph it was instantiated from (NULL: none) */
    uint32_t pool_seq;
    uint32_t schedule_bits; /* MT_LAUNCH_* schedule and seed bits, under the order's lock */
    uint32_t *sched_next;   /* debug schedules: per task, its next position */
    uint32_t *sched_ready;  /* the tasks whose next node may run */
    uint32_t *sched_flat;   /* position -> node index in the flattened graph */
    /* Taken by every launch (the host) and dropped when it has run (a worker): on a line
     * of its own, or each launch would pull the fields above away from the worker. */
    atomic_int refcount MT_ALIGNED;
};

/*
 * The order of a graph's replays. It belongs to the graph and is shared by every executable
 * instantiated from it, so replays of one graph never overlap whichever executable they
 * use (a re-instantiation while a replay runs included): a launch enqueues under `lock`,
 * and one on another stream than the previous launch first waits for `done`, which every
 * replay records. Updates take their generation from `done` too.
 */
struct mt_replay_order {
    atomic_int refs;
    mt_spinlock lock;
    mt_event *done;
    uint64_t last_stream_id;
};

static mt_replay_order *replay_order_new(void) {
    mt_replay_order *order = calloc(1, sizeof *order);
    if (!order) return NULL;
    atomic_init(&order->refs, 1);
    order->done = mt_event_new(MTIART_EVENT_DEFAULT);
    if (!order->done) {
        free(order);
        return NULL;
    }
    return order;
}

void mt_replay_order_unref(mt_replay_order *order) {
    if (!order || atomic_fetch_sub_explicit(&order->refs, 1, memory_order_acq_rel) != 1) return;
    mt_event_unref(order->done);
    free(order);
}

/* ------------------------------------------------------------------ plans */

static void plan_free(mt_plan *x) {
    if (!x) return;
    if (x->ops)
        for (size_t i = 0; i < x->num_nodes; i++) {
            mt_op *op = &x->ops[i];
            if (op->type == MT_OP_CONDITIONAL) plan_free(op->u.cond.body);
            else mt_op_release(op);
        }
    free(x->nodes);
    free(x->calls);
    free(x->ops);
    free(x->argv_store);
    free(x->position);
    free(x->fused_group);
    free(x->fused_begin);
    free(x->fused_members);
    free(x->fused_nargs);
    free(x->origins);
    free(x->top_flat);
    free(x->task_begin);
    free(x->succ);
    free(x->initial_pending);
    free(x->roots);
    free(x->pending);
    free(x->queue);
    free(x->stamps);
    free(x->deferred);
    free(x->src);
    free(x->xpred_begin);
    free(x->xpred);
    if (x->src_dag) mt_dag_unref(x->src_dag);
    free(x);
}

static void free_update(update *u) {
    for (size_t i = 0; i < u->count; i++) mt_op_release(&u->ops[i]);
    free(u->ops);
    free(u->targets);
    free(u);
}

/* An update with room for `cap` patches (NULL when out of host memory). */
static update *new_update(size_t cap) {
    update *u = calloc(1, sizeof *u);
    if (!u) return NULL;
    u->cap = cap ? cap : 1;
    u->ops = aligned_alloc(MT_CACHELINE, u->cap * sizeof *u->ops);
    u->targets = malloc(u->cap * sizeof *u->targets);
    if (!u->ops || !u->targets) {
        free_update(u);
        return NULL;
    }
    return u;
}

void mt_exec_ref(mt_exec *x) { atomic_fetch_add_explicit(&x->refcount, 1, memory_order_relaxed); }

static void exec_free(mt_exec *x) {
    plan_free(x->plan);
    if (x->bindings) mt_bindings_free(x->bindings);
    for (update *u = x->updates, *next; u; u = next) {
        next = u->next;
        free_update(u);
    }
    for (size_t i = 0; i < x->num_slots; i++)
        if (x->slot_event[i]) mt_event_unref(x->slot_event[i]);
    if (x->tmpl) mt_dag_unref(x->tmpl);
    mt_replay_order_unref(x->order);
    mt_graph_mem_free(atomic_load(&x->mem));
    for (size_t i = 0; i < x->num_retired_mem; i++) mt_graph_mem_free(x->retired_mem[i]);
    free(x->retired_mem);
    for (size_t i = 0; i < x->num_mem_nodes; i++) mt_graph_alloc_unref(x->mem_nodes[i].alloc);
    free(x->mem_nodes);
    if (x->pool) mt_pool_release(x->pool);
    if (x->pool_order) mt_pool_order_hold(x->pool_order, x->pool_seq, -1);
    for (size_t i = 0; i < x->num_update_pools; i++) mt_pool_release(x->update_pools[i]);
    free(x->update_pools);
    free(x->sched_next);
    free(x->sched_ready);
    free(x->sched_flat);
    free(x->slot_event);
    free(x->slot_record);
    free(x->launch_slots);
    pthread_mutex_destroy(&x->lock);
    free(x);
}

void mt_exec_unref(mt_exec *x) {
    if (atomic_fetch_sub_explicit(&x->refcount, 1, memory_order_acq_rel) == 1) exec_free(x);
}

mt_event *mt_exec_done_event(mt_exec *x) { return x->done; }

bool mt_exec_starting(const mt_exec *x) { return !x->suspended; }

mt_pool_order *mt_exec_pool_order(const mt_exec *x, uint32_t *seq) {
    *seq = x->pool_seq;
    return x->pool_order;
}

static void release_exec(void *x) { mt_exec_unref(x); }

/* ------------------------------------------------------------------ replay */

/* "3" for a top-level node, "3.1" for node 1 of the child graph at node 3. */
static void node_path(const mt_plan *x, const xnode *n, char *out, size_t cap) {
    if (!x->origins) {
        snprintf(out, cap, "%u", n->origin);
        return;
    }
    uint32_t chain[32], depth = 0;
    for (uint32_t o = n->origin; o != NONE && depth < 32; o = x->origins[o].parent)
        chain[depth++] = x->origins[o].index;
    size_t len = 0;
    out[0] = '\0';
    while (depth-- && len < cap) {
        int w = snprintf(out + len, cap - len, len ? ".%u" : "%u", chain[depth]);
        if (w < 0) break;
        len += (size_t)w;
    }
}

/* The first node of this replay that failed wins; later failures are dropped, as a
 * stream's sticky error keeps its first. Nodes run on several workers at once. */
static void node_failed(mt_plan *x, const xnode *n, int32_t code, const char *failure) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&x->failed, &expected, 1)) return;
    char path[96];
    node_path(x, n, path, sizeof path);
    x->failure_code = code;
    snprintf(x->failure, sizeof x->failure, "%s %s: %s", x->label, path, failure);
}

/* Wake the helpers asleep in wait_for_tasks (and in wait_for_stamp for queue entry
 * `slot`, unless NONE). The futex word changes before the wake: a helper between its
 * last look and its sleep would otherwise sleep through it. */
static void wake_helpers(mt_plan *x, uint32_t slot) {
    mt_spin_budget_waking(&x->dev->job_budget);
    atomic_fetch_add(&x->task_wakes, 1);
    mt_futex_wake(&x->task_wakes, INT_MAX);
    if (slot != NONE) mt_futex_wake(&x->stamps[slot], INT_MAX);
}

/* Queue `entry` (a task, or a resumed deferral as num_tasks + its index). */
static void queue_entry(mt_plan *x, uint32_t entry) {
    uint32_t slot = atomic_fetch_add(&x->queue_reserved, 1);
    x->queue[slot] = entry;
    /* seq_cst store then load of sleepers: pairs with a helper's increment of sleepers
     * then re-check in the waits below, so a wake cannot be missed. */
    atomic_store(&x->stamps[slot], x->epoch);
    if (MT_UNLIKELY(atomic_load(&x->sleepers))) wake_helpers(x, slot);
}

static void release_task(mt_plan *x, uint32_t task) {
    if (atomic_fetch_sub_explicit(&x->pending[task], 1, memory_order_acq_rel) != 1) return;
    queue_entry(x, task);
}

/* The pass is over once nothing is queued and nothing runs (what is processed is read
 * first: both only grow, and a task queues its successors before it counts as
 * processed). Tasks deferred on a wait node stay behind. */
static bool pass_over(mt_plan *x) {
    uint32_t done = atomic_load_explicit(&x->processed, memory_order_acquire);
    return done == atomic_load_explicit(&x->queue_reserved, memory_order_acquire);
}

/* No entry is left to take (the queue holds `seen`, all taken) but the pass is not over:
 * spin for as long as such waits take on the device, then sleep until an entry is queued
 * or the last one is processed. */
static void wait_for_tasks(mt_plan *x, uint32_t seen) {
    mt_spin_budget *budget = &x->dev->job_budget;
    uint64_t spin = mt_spin_budget_ns(budget);
    uint64_t start = spin ? mt_now_ns() : 0, slept_at = 0;
    for (unsigned i = 1; spin; i++) {
        if (atomic_load_explicit(&x->queue_reserved, memory_order_acquire) != seen || pass_over(x))
            goto done;
        mt_cpu_relax();
        if ((i & 15) == 0 && mt_now_ns() - start >= spin) break;
    }
    unsigned wakes = atomic_load(&x->task_wakes);
    atomic_fetch_add(&x->sleepers, 1);
    if (atomic_load(&x->queue_reserved) == seen && !pass_over(x)) {
        if (spin) slept_at = mt_now_ns();
        mt_futex_wait(&x->task_wakes, wakes);
    }
    atomic_fetch_sub(&x->sleepers, 1);
done:
    if (spin) mt_spin_budget_learn_wait(budget, start, slept_at, mt_job_spin_ns);
}

/* Queue entry i is reserved by a release that has not published its entry yet. */
static void wait_for_stamp(mt_plan *x, uint32_t i) {
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

/* The condition, read as a relaxed atomic (it is aligned): the body's work is ordered
 * before the read, but any block of a kernel may write the flag, in any order. */
static bool flag_set(const mt_op *op) {
    const void *flag = op->u.cond.flag;
    switch (op->u.cond.flag_size) {
    case 1: return __atomic_load_n((const uint8_t *)flag, __ATOMIC_RELAXED) != 0;
    case 2: return __atomic_load_n((const uint16_t *)flag, __ATOMIC_RELAXED) != 0;
    case 4: return __atomic_load_n((const uint32_t *)flag, __ATOMIC_RELAXED) != 0;
    default: return __atomic_load_n((const uint64_t *)flag, __ATOMIC_RELAXED) != 0;
    }
}

/* Under valgrind the flag is opened to memcheck for the read, as an op's buffers are while
 * it runs: the graph holds it, and the program may have freed it (alloc.c). */
static __attribute__((noinline, cold)) bool flag_set_under_valgrind(mt_device *dev,
                                                                    const mt_op *op) {
    const mt_buffer flag = {op->u.cond.flag, op->u.cond.flag_size, MTIART_ARG_BUFFER_IN, -1,
                            "condition"};
    mt_alloc_vg_enter(dev, &flag, 1);
    bool set = flag_set(op);
    mt_alloc_vg_leave(dev, &flag, 1);
    return set;
}

static int32_t plan_run_once(mt_plan *x);

static int32_t run_conditional(mt_device *dev, const mt_op *op, char *failure, size_t cap) {
    mt_plan *body = op->u.cond.body;
    bool loop = op->u.cond.kind == MTIART_CONDITIONAL_WHILE;
    while (MT_LIKELY(!mt_under_valgrind) ? flag_set(op) : flag_set_under_valgrind(dev, op)) {
        int32_t rc = plan_run_once(body);
        if (MT_UNLIKELY(rc != 0)) {
            snprintf(failure, cap, "%s %.400s", loop ? "WHILE" : "IF", body->failure);
            return rc;
        }
        if (!loop) break;
    }
    return 0;
}

static __attribute__((noinline, cold)) void kernel_failed(mt_plan *x, uint32_t pos, int32_t rc) {
    char failure[MT_FAILURE_MAX];
    mt_describe_failure(x->calls[pos].fn, rc, NULL, failure, sizeof failure);
    node_failed(x, &x->nodes[pos], rc, failure);
}

static void trace_body(const mt_plan *x, mt_plan *body);

/* Anything but a single-block kernel. false: a wait node whose record has not completed
 * (the task is deferred from here). Out of line: the loop over single-block kernels stays
 * small. */
static __attribute__((noinline)) bool run_other(mt_plan *x, uint32_t task, uint32_t pos) {
    xnode *n = &x->nodes[pos];
    mt_op *op = n->op;
    char failure[MT_FAILURE_MAX];
    int32_t rc;
    switch (op->type) {
    case MT_OP_EVENT_WAIT:
        if (atomic_load_explicit(&op->u.event.event->completed, memory_order_acquire) >=
            x->slots[n->slot])
            return true;
        x->deferred[atomic_fetch_add(&x->num_deferred, 1)] = (deferral){task, pos, false};
        return false;
    case MT_OP_EVENT_RECORD: x->record(op->u.event.event, x->slots[n->slot]); return true;
    case MT_OP_CONDITIONAL:
        if (MT_UNLIKELY(x->tracing)) {
            trace_body(x, op->u.cond.body);
            rc = run_conditional(x->dev, op, failure, sizeof failure);
            op->u.cond.body->tracing = false;
        } else {
            rc = run_conditional(x->dev, op, failure, sizeof failure);
        }
        break;
    default: rc = mt_op_run(x->dev, op, x->calls[pos].argv, failure, sizeof failure); break;
    }
    if (MT_UNLIKELY(rc != 0)) node_failed(x, n, rc, failure);
    return true;
}

static inline __attribute__((always_inline)) void
run_nodes_plain(mt_plan *x, uint32_t task, uint32_t begin, uint32_t end, bool release) {
    for (uint32_t p = begin; p < end; p++) {
        const xcall *c = &x->calls[p];
        if (MT_LIKELY(c->fn != NULL)) { /* a single-block kernel: called directly */
            int32_t rc = c->fn(c->argv, 0, 1);
            if (MT_UNLIKELY(rc != 0)) kernel_failed(x, p, rc);
        } else if (MT_UNLIKELY(!run_other(x, task, p))) {
            return;
        }
        if (release) {
            const xnode *n = &x->nodes[p];
            for (uint32_t k = n->succ_begin; k < n->succ_end; k++) release_task(x, x->succ[k]);
        }
    }
}

/* A replay of a chain whose every node is a single-block kernel: nothing but the calls.
 * Whatever else a node may need (a wait, a release, a trace, an update) the caller has
 * ruled out for the whole replay. */
static void run_chain_calls(mt_plan *x) {
    const xcall *c = x->calls, *const end = c + x->num_nodes;
    for (; c != end; c++) {
        int32_t rc = c->fn(c->argv, 0, 1);
        if (MT_UNLIKELY(rc != 0)) kernel_failed(x, (uint32_t)(c - x->calls), rc);
    }
}

/* run_nodes_plain, recording each node in the trace. The clock is read once per node: a
 * node ends when the next one starts. */
static __attribute__((noinline)) void run_nodes_traced(mt_plan *x, uint32_t task, uint32_t begin,
                                                       uint32_t end, bool release) {
    mt_trace_node_rec rec = x->trace;
    uint64_t start = mt_trace_clock();
    for (uint32_t p = begin; p < end; p++) {
        xnode *n = &x->nodes[p];
        rec.node = x->src[p];
        rec.pos = p;
        rec.type = n->op->type;
        if (n->slot != NONE) {
            rec.event = n->op->u.event.event;
            rec.generation = x->slots[n->slot];
        }
        bool recorded = rec.type == MT_OP_EVENT_RECORD;
        /* a record is in the trace before anyone can see it complete */
        if (recorded) {
            uint64_t now = mt_trace_clock();
            mt_trace_node(&rec, start, now);
            start = now;
        }
        const xcall *c = &x->calls[p];
        if (c->fn) {
            int32_t rc = c->fn(c->argv, 0, 1);
            if (MT_UNLIKELY(rc != 0)) kernel_failed(x, p, rc);
        } else if (!run_other(x, task, p)) {
            return;
        }
        uint64_t now = mt_trace_clock();
        if (!recorded) mt_trace_node(&rec, start, now);
        start = now;
        if (release)
            for (uint32_t k = n->succ_begin; k < n->succ_end; k++) release_task(x, x->succ[k]);
    }
}

/* Run positions [begin, end) of a task (`release`: the tasks they release). The test of
 * `tracing` is made once per call, outside the loop, which is inlined into each caller
 * and specialised for it (a chain's loop has no releases to look at). */
static inline void run_nodes(mt_plan *x, uint32_t task, uint32_t begin, uint32_t end,
                             bool release) {
    if (MT_UNLIKELY(x->tracing)) run_nodes_traced(x, task, begin, end, release);
    else run_nodes_plain(x, task, begin, end, release);
}

/* A conditional body runs in the trace of the replay that runs it. */
static void trace_body(const mt_plan *x, mt_plan *body) {
    body->trace = x->trace;
    body->trace.plan = body;
    body->tracing = true;
}

uint32_t mt_plan_cross_stream_preds(const void *plan, uint32_t pos, const uint32_t **preds) {
    const mt_plan *x = plan;
    if (!x->xpred_begin) return 0;
    *preds = &x->xpred[x->xpred_begin[pos]];
    return x->xpred_begin[pos + 1] - x->xpred_begin[pos];
}

/* Run a queue entry: a task from its start, or a deferred one from its wait node. */
static void run_entry(mt_plan *x, uint32_t entry) {
    if (MT_LIKELY(entry < x->num_tasks)) {
        run_nodes(x, entry, x->task_begin[entry], x->task_begin[entry + 1], true);
        return;
    }
    const deferral *d = &x->deferred[entry - x->num_tasks];
    run_nodes(x, d->task, d->pos, x->task_begin[d->task + 1], true);
}

typedef struct graph_job {
    mt_job base;
    mt_plan *x;
} graph_job;

static void graph_job_help(mt_job *base) {
    mt_plan *x = ((graph_job *)base)->x;
    const uint32_t workers = (uint32_t)x->dev->num_workers;
    for (;;) {
        uint32_t head = atomic_load_explicit(&x->queue_head, memory_order_relaxed);
        uint32_t reserved = atomic_load_explicit(&x->queue_reserved, memory_order_acquire);
        if (head >= reserved) {
            if (pass_over(x)) return;
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
            run_entry(x, x->queue[i]);
        }
        /* The last entry done: helpers asleep for more can leave. */
        atomic_fetch_add(&x->processed, take);
        if (atomic_load(&x->sleepers) && pass_over(x)) wake_helpers(x, NONE);
    }
}

static void plan_begin(mt_plan *x) {
    atomic_store_explicit(&x->failed, 0, memory_order_relaxed);
    if (x->num_waits) {
        atomic_store_explicit(&x->num_deferred, 0, memory_order_relaxed);
        x->num_resumed = 0;
    }
    if (x->num_tasks <= 1) return;
    if (++x->epoch == 0) {
        for (uint32_t i = 0; i < x->num_tasks + x->num_waits; i++)
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
    atomic_store_explicit(&x->processed, 0, memory_order_relaxed);
    atomic_store_explicit(&x->queue_reserved, x->num_roots, memory_order_release);
}

/* Put the deferred tasks whose records have completed back to work; how many. */
static uint32_t plan_requeue(mt_plan *x) {
    uint32_t count = 0, deferred = atomic_load_explicit(&x->num_deferred, memory_order_acquire);
    for (uint32_t i = 0; i < deferred; i++) {
        deferral *d = &x->deferred[i];
        const xnode *n = &x->nodes[d->pos];
        if (d->resumed || atomic_load(&n->op->u.event.event->completed) < x->slots[n->slot])
            continue;
        d->resumed = true;
        x->num_resumed++;
        count++;
        if (x->num_tasks <= 1) continue; /* a chain resumes in plan_pass */
        queue_entry(x, x->num_tasks + i);
    }
    return count;
}

/* Whether the next replays share their tasks with helpers, from how long a replay took:
 * above REPLAY_PARALLEL_NS run alone, they go parallel; below REPLAY_SERIAL_NS shared,
 * back to one loop (the gap keeps a plan near the threshold from flip-flopping). Every
 * REPLAY_TIMING_PERIOD-th replay is timed, the first one included: two clock reads cost
 * as much as a few empty nodes. Helpers cost more than a few microseconds of work gain. */
#define REPLAY_PARALLEL_NS 20000
#define REPLAY_SERIAL_NS 8000
#define REPLAY_TIMING_PERIOD 16

static void learn_replay_time(mt_plan *x, uint64_t ns) {
    if (x->parallel) x->parallel = ns >= REPLAY_SERIAL_NS;
    else x->parallel = ns > REPLAY_PARALLEL_NS;
}

static void share_pass(mt_plan *x);

/* Run what can run: from the start, or (`resume_from`: the deferral of a chain) on from a
 * wait node whose record has completed. */
static void plan_pass(mt_plan *x, const deferral *resume_from) {
    if (x->num_tasks <= 1) {
        if (resume_from) run_nodes(x, 0, resume_from->pos, x->num_nodes, false);
        else run_nodes(x, 0, 0, x->num_nodes, false);
        return;
    }
    if (!x->num_waits) {
        /* The layout is a topological order: one loop runs it all. */
        if (x->dev->num_workers <= 1) {
            run_nodes(x, 0, 0, x->num_nodes, false);
            return;
        }
        bool timed = x->replays++ % REPLAY_TIMING_PERIOD == 0;
        uint64_t start = timed ? mt_now_ns() : 0;
        if (x->parallel) share_pass(x);
        else run_nodes(x, 0, 0, x->num_nodes, false);
        if (timed) learn_replay_time(x, mt_now_ns() - start);
        return;
    }
    share_pass(x);
}

/* A pass shared with the device's other workers. */
static void share_pass(mt_plan *x) {
    graph_job job = {.base = {graph_job_help}, .x = x};
    /* Two chains in a row (one root, two tasks) gain nothing from helpers. */
    mt_job_slot *slot =
        x->num_roots > 1 || x->num_tasks > 2 ? mt_job_post(x->dev, &job.base) : NULL;
    graph_job_help(&job.base);
    mt_job_retire(x->dev, slot);
}

static bool plan_suspended(mt_plan *x) {
    return x->num_waits &&
           atomic_load_explicit(&x->num_deferred, memory_order_acquire) > x->num_resumed;
}

static int32_t plan_result(mt_plan *x, char *failure, size_t cap) {
    if (MT_LIKELY(!atomic_load_explicit(&x->failed, memory_order_acquire))) return 0;
    if (failure) snprintf(failure, cap, "%s", x->failure);
    return x->failure_code;
}

/* A conditional body: no event nodes, so it never suspends. */
static int32_t plan_run_once(mt_plan *x) {
    plan_begin(x);
    plan_pass(x, NULL);
    return plan_result(x, NULL, 0);
}

/* Whether position `pos` is called directly (a single-block kernel), kept with the count of
 * positions that are not. Under valgrind every op goes through mt_op_run (see there). */
static void set_call_fn(mt_plan *x, uint32_t pos) {
    const mt_op *op = &x->ops[pos];
    xcall *c = &x->calls[pos];
    x->num_indirect -= c->fn == NULL;
    c->fn = op->type == MT_OP_KERNEL && op->num_blocks == 1 && !mt_under_valgrind ? op->fn.kernel
                                                                                  : NULL;
    x->num_indirect += c->fn == NULL;
}

static void apply_patch(mt_op *op, const patch_target *to) {
    mt_op *dst = &to->plan->ops[to->pos];
    if (dst->type == MT_OP_CONDITIONAL) { /* the body's plan stays; its nodes have patches */
        dst->u.cond.flag = op->u.cond.flag;
        dst->u.cond.flag_size = op->u.cond.flag_size;
        return;
    }
    mt_op_release(dst);
    *dst = *op; /* moved */
    op->type = MT_OP_EMPTY;
    if (dst->type == MT_OP_KERNEL) mt_blob_argv(mt_op_blob(dst), to->plan->calls[to->pos].argv);
    set_call_fn(to->plan, to->pos);
}

/* Worker, at the start of the replay of `generation`: the updates made before its launch. */
static void apply_updates(mt_exec *x, uint64_t generation) {
    mt_spin_lock(&x->update_lock);
    update *due = NULL, **tail = &due;
    while (x->updates && x->updates->generation <= generation) {
        update *u = x->updates;
        x->updates = u->next;
        u->next = NULL;
        *tail = u;
        tail = &u->next;
    }
    if (!x->updates) {
        x->updates_tail = NULL;
        atomic_store(&x->has_updates, 0);
    }
    mt_spin_unlock(&x->update_lock);
    for (update *u = due, *next; u; u = next) {
        next = u->next;
        for (size_t i = 0; i < u->count; i++) apply_patch(&u->ops[i], &u->targets[i]);
        free_update(u);
    }
}

static uint64_t *launch_slots(mt_op *op) {
    return op->u.graph.slots ? op->u.graph.slots : (uint64_t *)(void *)op->inline_blob;
}

static void run_scheduled(mt_exec *x, mt_plan *p, uint32_t checks);

/* Everything but a chain without waits or updates: updates, job posting, suspension,
 * debug schedules. */
static __attribute__((noinline)) int32_t run_general(mt_exec *x, mt_plan *p, uint64_t generation,
                                                     uint32_t checks, mt_event **park,
                                                     uint64_t *park_generation, char *failure,
                                                     size_t cap) {
    if (!x->suspended) {
        if (atomic_load_explicit(&x->has_updates, memory_order_acquire))
            apply_updates(x, generation);
        if (MT_UNLIKELY(checks >> MT_LAUNCH_SCHEDULE_SHIFT & MT_LAUNCH_SCHEDULE_MASK)) {
            run_scheduled(x, p, checks);
            return plan_result(p, failure, cap);
        }
        plan_begin(p);
        plan_pass(p, NULL);
    } else if (plan_requeue(p)) {
        /* A chain stops at one wait at a time: the one just resumed is its last. */
        plan_pass(p, p->num_tasks <= 1 ? &p->deferred[p->num_resumed - 1] : NULL);
    }
    x->suspended = plan_suspended(p);
    if (MT_UNLIKELY(x->suspended)) {
        for (uint32_t i = 0;; i++)
            if (!p->deferred[i].resumed) {
                const xnode *n = &p->nodes[p->deferred[i].pos];
                *park = n->op->u.event.event;
                *park_generation = p->slots[n->slot];
                return 0;
            }
    }
    return plan_result(p, failure, cap);
}

/* A replay recorded in the trace: its plan (and the bodies it runs) trace their nodes. */
static __attribute__((noinline)) int32_t run_traced(mt_exec *x, mt_plan *p, mt_op *op,
                                                    mt_event **park, uint64_t *park_generation,
                                                    char *failure, size_t cap) {
    p->tracing = mt_trace_hold(x, &x->trace_session);
    mt_spin_lock(&x->order->lock); /* a launch on another stream may be changing it */
    uint64_t stream_id = x->order->last_stream_id;
    mt_spin_unlock(&x->order->lock);
    p->trace = (mt_trace_node_rec){.plan = p,
                                   .exec = x,
                                   .stream_id = stream_id,
                                   .replay = op->u.graph.generation,
                                   .device = x->dev->index};
    int32_t rc = run_general(x, p, op->u.graph.generation, op->u.graph.checks, park,
                             park_generation, failure, cap);
    p->tracing = false;
    return rc;
}

int32_t mt_exec_run(mt_op *op, mt_record_fn record, mt_event **park, uint64_t *park_generation,
                    char *failure, size_t cap) {
    mt_exec *x = op->u.graph.exec;
    mt_plan *p = x->plan;
    p->slots = launch_slots(op);
    p->record = record;
    if (MT_UNLIKELY(mt_trace_on()))
        return run_traced(x, p, op, park, park_generation, failure, cap);
    if (MT_LIKELY(p->num_tasks <= 1 && !p->num_waits && !x->suspended &&
                  !atomic_load_explicit(&x->has_updates, memory_order_relaxed))) {
        /* The common case, a chain: one loop on this worker. */
        atomic_store_explicit(&p->failed, 0, memory_order_relaxed);
        if (MT_LIKELY(p->num_indirect == 0)) run_chain_calls(p);
        else run_nodes(p, 0, 0, p->num_nodes, false);
        return plan_result(p, failure, cap);
    }
    return run_general(x, p, op->u.graph.generation, op->u.graph.checks, park, park_generation,
                       failure, cap);
}

void mt_exec_release_launch(mt_op *op) {
    if (MT_UNLIKELY(op->u.graph.slots != NULL)) free(op->u.graph.slots);
    mt_exec_unref(op->u.graph.exec);
}

/* ------------------------------------------------------------------ debug schedules */

/* A step of splitmix64: the random schedule's generator. */
static uint64_t next_random(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* One node at a time on this worker: the ready tasks (a task's next node may run once the
 * task is released) and, of their next nodes, the one the schedule picks. A task's nodes
 * depend on the one before them only, so this is every topological order there is. A
 * failed node is recorded as in a plan's replay and the others still run. */
static void run_scheduled(mt_exec *x, mt_plan *p, uint32_t checks) {
    uint32_t schedule = checks >> MT_LAUNCH_SCHEDULE_SHIFT & MT_LAUNCH_SCHEDULE_MASK;
    uint64_t state = checks >> MT_LAUNCH_SEED_SHIFT;
    atomic_store_explicit(&p->failed, 0, memory_order_relaxed);
    uint32_t num_ready = 0;
    for (uint32_t t = 0; t < p->num_tasks; t++) {
        atomic_store_explicit(&p->pending[t], p->initial_pending[t], memory_order_relaxed);
        x->sched_next[t] = p->task_begin[t];
        if (p->initial_pending[t] == 0) x->sched_ready[num_ready++] = t;
    }
    while (num_ready) {
        uint32_t pick = 0;
        if (schedule == MTIART_SCHEDULE_RANDOM) {
            pick = (uint32_t)(next_random(&state) % num_ready);
        } else {
            for (uint32_t i = 1; i < num_ready; i++) {
                uint32_t a = x->sched_flat[x->sched_next[x->sched_ready[i]]];
                uint32_t b = x->sched_flat[x->sched_next[x->sched_ready[pick]]];
                if (schedule == MTIART_SCHEDULE_SERIAL ? a < b : a > b) pick = i;
            }
        }
        uint32_t task = x->sched_ready[pick], pos = x->sched_next[task]++;
        if (x->sched_next[task] == p->task_begin[task + 1])
            x->sched_ready[pick] = x->sched_ready[--num_ready];
        run_nodes(p, task, pos, pos + 1, false);
        const xnode *n = &p->nodes[pos];
        for (uint32_t k = n->succ_begin; k < n->succ_end; k++) {
            uint32_t t = p->succ[k];
            uint32_t left = atomic_load_explicit(&p->pending[t], memory_order_relaxed) - 1;
            atomic_store_explicit(&p->pending[t], left, memory_order_relaxed);
            if (left == 0) x->sched_ready[num_ready++] = t;
        }
    }
}

MTIART_API mtiart_status mtiart_graph_exec_set_schedule(mtiart_graph_exec exec,
                                                        mtiart_schedule schedule, uint64_t seed) {
    MT_API_ENTRY();
    LOOKUP_EXEC(x, exec);
    if ((unsigned)schedule > MTIART_SCHEDULE_RANDOM)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "unknown schedule %d", (int)schedule);
    mt_plan *p = x->plan;
    if (schedule != MTIART_SCHEDULE_DEFAULT && p->num_waits)
        return mt_set_error(MTIART_ERROR_NOT_SUPPORTED,
                            "the executable has %u event wait nodes: a debug schedule runs "
                            "its nodes on one worker, which a wait could hold",
                            p->num_waits);
    pthread_mutex_lock(&x->lock);
    mtiart_status st = MTIART_SUCCESS;
    if (schedule != MTIART_SCHEDULE_DEFAULT && !x->sched_flat) {
        /* The order of positions in the flattened graph: the inverse of p->position. */
        uint32_t n = p->num_nodes, tasks = p->num_tasks;
        uint32_t *flat = malloc((n ? n : 1) * sizeof *flat);
        uint32_t *next = malloc((tasks ? tasks : 1) * sizeof *next);
        uint32_t *ready = malloc((tasks ? tasks : 1) * sizeof *ready);
        if (!flat || !next || !ready) {
            free(flat);
            free(next);
            free(ready);
            st = mt_oom();
        } else {
            for (uint32_t v = 0; v < n; v++) flat[p->position[v]] = v;
            x->sched_next = next;
            x->sched_ready = ready;
            x->sched_flat = flat;
        }
    }
    if (st == MTIART_SUCCESS) {
        /* 29 bits of `seed`, mixed so that nearby seeds draw unrelated orders. */
        uint64_t mixed = seed;
        uint32_t bits = (uint32_t)schedule << MT_LAUNCH_SCHEDULE_SHIFT;
        if (schedule == MTIART_SCHEDULE_RANDOM)
            bits |= (uint32_t)(next_random(&mixed) >> 35) << MT_LAUNCH_SEED_SHIFT;
        mt_spin_lock(&x->order->lock);
        x->schedule_bits = bits;
        mt_spin_unlock(&x->order->lock);
    }
    pthread_mutex_unlock(&x->lock);
    return st;
}

/* ------------------------------------------------------------------ flattening */

/* The instantiated graph's nodes, child graphs spliced in: each with the dag node it
 * came from and its dependencies among the flattened nodes. */
typedef struct flat_node {
    const mt_node *node;
    const mt_op *op; /* the node's, or the fusion pass's launch standing for a chain */
    const size_t *deps;
    uint32_t num_deps;
    uint32_t origin;
} flat_node;

typedef struct flat {
    flat_node *nodes;
    uint32_t n;
    size_t *deps; /* with child graphs: every node's dependencies, back to back */
    size_t num_deps, cap_deps;
    size_t *dep_at; /* offsets into deps, turned into pointers at the end */
    origin *origins;
    uint32_t num_origins;
    uint32_t *stamp; /* per flattened node: the last gather that added it */
    uint32_t token;
    uint32_t *top_flat;
} flat;

static size_t count_nodes(const mt_dag *d, bool leaves_only) {
    size_t n = 0;
    for (size_t i = 0; i < d->num_nodes; i++) {
        const mt_node *node = &d->nodes[i];
        n += node->op.type == MT_OP_CHILD
                 ? count_nodes(node->body, leaves_only) + (leaves_only ? 0 : 1)
                 : 1;
    }
    return n;
}

static bool has_child(const mt_dag *d) {
    for (size_t i = 0; i < d->num_nodes; i++)
        if (d->nodes[i].op.type == MT_OP_CHILD) return true;
    return false;
}

static bool push_dep(flat *f, size_t v) {
    if (f->stamp[v] == f->token) return true;
    f->stamp[v] = f->token;
    if (f->num_deps == f->cap_deps) {
        size_t cap = f->cap_deps ? f->cap_deps * 2 : 64;
        size_t *grown = realloc(f->deps, cap * sizeof *grown);
        if (!grown) return false;
        f->deps = grown;
        f->cap_deps = cap;
    }
    f->deps[f->num_deps++] = v;
    return true;
}

/* A list of flattened nodes (what a dag node stands for to its dependents). */
typedef struct vec {
    size_t *v;
    size_t n, cap;
} vec;

static bool vec_push(vec *a, size_t value) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        size_t *grown = realloc(a->v, cap * sizeof *grown);
        if (!grown) return false;
        a->v = grown;
        a->cap = cap;
    }
    a->v[a->n++] = value;
    return true;
}

/* Flatten dag `d` (its origin entry `parent`): its roots depend on `incoming`; `sinks`
 * gets the flattened nodes that stand for d's sinks (or `incoming` if d is empty). */
static bool flatten(flat *f, const mt_dag *d, uint32_t parent, const size_t *incoming,
                    size_t num_incoming, vec *sinks) {
    size_t n = d->num_nodes;
    size_t *res_at = malloc((n + 1) * sizeof *res_at);
    bool *has_succ = calloc(n ? n : 1, sizeof *has_succ);
    vec res = {0}, gathered = {0};
    bool ok = res_at && has_succ;
    for (size_t i = 0; ok && i < n; i++) {
        const mt_node *node = &d->nodes[i];
        res_at[i] = res.n; /* node i-1's entries end here */
        uint32_t o = f->num_origins++;
        f->origins[o] = (origin){parent, (uint32_t)i};
        /* What the node depends on, among the flattened nodes, each once. */
        f->token++;
        size_t first = f->num_deps;
        if (node->num_deps == 0)
            for (size_t k = 0; ok && k < num_incoming; k++) ok = push_dep(f, incoming[k]);
        for (uint32_t k = 0; ok && k < node->num_deps; k++) {
            size_t dep = node->deps[k];
            has_succ[dep] = true;
            for (size_t r = res_at[dep]; ok && r < res_at[dep + 1]; r++) ok = push_dep(f, res.v[r]);
        }
        if (!ok) break;
        if (node->op.type == MT_OP_CHILD) {
            /* The gathered dependencies are the child's incoming edges, not a node's. */
            gathered.n = 0;
            for (size_t k = first; ok && k < f->num_deps; k++) ok = vec_push(&gathered, f->deps[k]);
            f->num_deps = first;
            vec child_sinks = {0};
            ok = ok && flatten(f, node->body, o, gathered.v, gathered.n, &child_sinks);
            for (size_t k = 0; ok && k < child_sinks.n; k++) ok = vec_push(&res, child_sinks.v[k]);
            free(child_sinks.v);
            if (parent == NONE) f->top_flat[i] = NONE;
        } else {
            uint32_t v = f->n++;
            f->nodes[v] = (flat_node){node, &node->op, NULL, (uint32_t)(f->num_deps - first), o};
            f->dep_at[v] = first;
            if (parent == NONE) f->top_flat[i] = v;
            ok = vec_push(&res, v);
        }
    }
    if (ok) res_at[n] = res.n;
    if (ok && n == 0)
        for (size_t k = 0; ok && k < num_incoming; k++) ok = vec_push(sinks, incoming[k]);
    for (size_t i = 0; ok && i < n; i++)
        if (!has_succ[i])
            for (size_t r = res_at[i]; ok && r < res_at[i + 1]; r++) ok = vec_push(sinks, res.v[r]);
    free(res_at);
    free(has_succ);
    free(res.v);
    free(gathered.v);
    return ok;
}

static void flat_free(flat *f) {
    free(f->nodes);
    free(f->deps);
    free(f->dep_at);
    free(f->origins);
    free(f->stamp);
    free(f->top_flat);
}

/* The flattened view of a dag: the dag's own nodes when it has no child graph. */
static mtiart_status flat_build(flat *f, const mt_dag *d) {
    memset(f, 0, sizeof *f);
    if (!has_child(d)) {
        f->n = (uint32_t)d->num_nodes;
        f->nodes = malloc((d->num_nodes ? d->num_nodes : 1) * sizeof *f->nodes);
        MT_CHECK_ALLOC(f->nodes);
        for (uint32_t v = 0; v < f->n; v++)
            f->nodes[v] = (flat_node){&d->nodes[v], &d->nodes[v].op, d->nodes[v].deps,
                                      d->nodes[v].num_deps, v};
        return MTIART_SUCCESS;
    }
    size_t leaves = count_nodes(d, true), all = count_nodes(d, false);
    if (leaves > UINT32_MAX / 2 || all > UINT32_MAX / 2)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "graph too large");
    f->nodes = malloc((leaves ? leaves : 1) * sizeof *f->nodes);
    f->dep_at = malloc((leaves ? leaves : 1) * sizeof *f->dep_at);
    f->stamp = calloc(leaves ? leaves : 1, sizeof *f->stamp);
    f->origins = malloc(all * sizeof *f->origins);
    f->top_flat = malloc(d->num_nodes * sizeof *f->top_flat);
    vec sinks = {0};
    if (!f->nodes || !f->dep_at || !f->stamp || !f->origins || !f->top_flat ||
        !flatten(f, d, NONE, NULL, 0, &sinks)) {
        free(sinks.v);
        flat_free(f);
        return mt_oom();
    }
    free(sinks.v);
    for (uint32_t v = 0; v < f->n; v++) f->nodes[v].deps = f->deps + f->dep_at[v];
    return MTIART_SUCCESS;
}

/* ------------------------------------------------------------------ instantiation */

static mtiart_status plan_build(mt_plan **out, const mt_dag *d, mt_device *dev, bool body,
                                bool fuse);

/* The edges of the plan between nodes that different streams captured (what a trace draws
 * as arrows): per position, the positions of such predecessors. Nothing when there are
 * none. */
static bool cross_stream_preds(mt_plan *x, const flat *f, const uint32_t *position) {
    uint32_t n = f->n, total = 0;
    for (uint32_t v = 0; v < n; v++)
        for (uint32_t d = 0; d < f->nodes[v].num_deps; d++)
            total += f->nodes[f->nodes[v].deps[d]].node->stream_id != f->nodes[v].node->stream_id;
    if (!total) return true;
    x->xpred_begin = calloc(n + 1, sizeof *x->xpred_begin);
    x->xpred = malloc(total * sizeof *x->xpred);
    if (!x->xpred_begin || !x->xpred) return false;
    for (uint32_t v = 0; v < n; v++)
        for (uint32_t d = 0; d < f->nodes[v].num_deps; d++)
            x->xpred_begin[position[v] + 1] +=
                f->nodes[f->nodes[v].deps[d]].node->stream_id != f->nodes[v].node->stream_id;
    for (uint32_t p = 0; p < n; p++) x->xpred_begin[p + 1] += x->xpred_begin[p];
    uint32_t *fill = calloc(n ? n : 1, sizeof *fill);
    if (!fill) return false;
    for (uint32_t v = 0; v < n; v++)
        for (uint32_t d = 0; d < f->nodes[v].num_deps; d++) {
            uint32_t u = (uint32_t)f->nodes[v].deps[d];
            if (f->nodes[u].node->stream_id == f->nodes[v].node->stream_id) continue;
            uint32_t p = position[v];
            x->xpred[x->xpred_begin[p] + fill[p]++] = position[u];
        }
    free(fill);
    return true;
}

/* The plan of flattened graph f, in three passes: chains and counts, the chains' layout,
 * then each node's op, argument vector and task releases (a node's successors may sit
 * anywhere in x->succ, so edges are filled in node order, predecessors first). */
static mtiart_status build_plan(mt_plan *x, const flat *f) {
    uint32_t n = f->n;
    /* chain_of, chain_tail, next_in_chain, chain_head, succ_count */
    uint32_t *scratch = malloc((n ? n : 1) * 5 * sizeof *scratch);
    x->position = malloc((n ? n : 1) * sizeof *x->position); /* node -> layout position */
    mtiart_status st = MTIART_SUCCESS;
    bool laid_out = false;   /* x->position is filled in */
    uint32_t done_until = 0; /* nodes whose op is in the plan (the others are left EMPTY) */
    if (!scratch || !x->position) goto oom;
    uint32_t *chain_of = scratch, *chain_tail = scratch + n, *next_in_chain = scratch + 2 * n,
             *chain_head = scratch + 3 * n, *succ_count = scratch + 4 * n;
    uint32_t *position = x->position;
    uint32_t chains = 0, num_events = 0;
    size_t total = 0, argv_total = 0, cross_stream = 0;
    /* Chains run in order of their nodes: with each continued from the node just before,
     * the layout is the nodes' own order (a chain, independent nodes) */
    bool in_order = true;
    for (uint32_t v = 0; v < n; v++) {
        next_in_chain[v] = NONE;
        succ_count[v] = 0;
        const flat_node *node = &f->nodes[v];
        const mt_op *op = node->op;
        if (op->type == MT_OP_KERNEL) {
            uint16_t count;
            memcpy(&count, op->u.kernel.heap_blob ? op->u.kernel.heap_blob : op->inline_blob, 2);
            argv_total += count;
        } else if (op->type == MT_OP_EVENT_RECORD || op->type == MT_OP_EVENT_WAIT) {
            num_events++;
            x->num_waits += op->type == MT_OP_EVENT_WAIT;
        }
        uint32_t continued = NONE;
        if (node->num_deps == 1) {
            uint32_t u = (uint32_t)node->deps[0];
            uint32_t c = chain_of[u];
            if (chain_tail[c] == u) {
                chain_of[v] = c;
                chain_tail[c] = v;
                next_in_chain[u] = v;
                continued = u;
                in_order &= u == v - 1;
            }
        }
        if (continued == NONE) {
            chain_of[v] = chains;
            chain_head[chains] = v;
            chain_tail[chains] = v;
            chains++;
        }
        /* Edges that leave a chain become task releases on the predecessor node. */
        for (uint32_t d = 0; d < node->num_deps; d++) {
            uint32_t u = (uint32_t)node->deps[d];
            cross_stream += f->nodes[u].node->stream_id != node->node->stream_id;
            if (u != continued) {
                succ_count[u]++;
                total++;
            }
        }
    }
    x->num_tasks = chains;
    x->task_begin = malloc((chains + 1) * sizeof *x->task_begin);
    x->initial_pending = malloc((chains ? chains : 1) * sizeof *x->initial_pending);
    x->roots = malloc((chains ? chains : 1) * sizeof *x->roots);
    x->pending = malloc((chains ? chains : 1) * sizeof *x->pending);
    if (!x->task_begin || !x->initial_pending || !x->roots || !x->pending) goto oom;
    uint32_t pos = 0;
    for (uint32_t c = 0; c < chains; c++) {
        x->task_begin[c] = pos;
        if (in_order) pos = c + 1 < chains ? chain_head[c + 1] : n;
        else
            for (uint32_t v = chain_head[c]; v != NONE; v = next_in_chain[v]) position[v] = pos++;
        x->initial_pending[c] = f->nodes[chain_head[c]].num_deps;
        if (x->initial_pending[c] == 0) x->roots[x->num_roots++] = c;
    }
    x->task_begin[chains] = pos;
    if (in_order)
        for (uint32_t v = 0; v < n; v++) position[v] = v;
    laid_out = true;
    x->succ = malloc((total ? total : 1) * sizeof *x->succ);
    x->argv_store = malloc((argv_total ? argv_total : 1) * sizeof *x->argv_store);
    uint32_t queue_cap = chains + x->num_waits;
    x->queue = malloc((queue_cap ? queue_cap : 1) * sizeof *x->queue);
    x->stamps = calloc(queue_cap ? queue_cap : 1, sizeof *x->stamps);
    x->deferred = malloc((x->num_waits ? x->num_waits : 1) * sizeof *x->deferred);
    x->src = malloc((n ? n : 1) * sizeof *x->src);
    if (!x->succ || !x->argv_store || !x->queue || !x->stamps || !x->deferred || !x->src) goto oom;
    size_t argv_used = 0;
    uint32_t offset = 0;
    for (uint32_t v = 0; v < n; v++) {
        const flat_node *fn = &f->nodes[v];
        uint32_t p = position[v];
        xnode *xn = &x->nodes[p];
        mt_op *op = &x->ops[p];
        done_until = v + 1; /* a failed clone leaves an EMPTY op */
        if (fn->op->type == MT_OP_KERNEL && !fn->op->u.kernel.heap_blob) *op = *fn->op;
        else if ((st = mt_op_clone(op, fn->op))) goto done;
        x->src[p] = fn->node;
        xn->op = op;
        xn->origin = fn->origin;
        xn->slot = NONE;
        xn->succ_begin = xn->succ_end = offset;
        offset += succ_count[v];
        for (uint32_t d = 0; d < fn->num_deps; d++) {
            uint32_t u = (uint32_t)fn->deps[d];
            if (next_in_chain[u] != v) {
                xnode *from = &x->nodes[position[u]];
                x->succ[from->succ_end++] = chain_of[v];
            }
        }
        set_call_fn(x, p);
        if (op->type == MT_OP_KERNEL) {
            x->calls[p].argv = &x->argv_store[argv_used];
            argv_used += mt_blob_argv(mt_op_blob(op), x->calls[p].argv);
        } else if (op->type == MT_OP_CONDITIONAL) {
            op->u.cond.body = NULL;
            st = plan_build(&op->u.cond.body, fn->node->body, x->dev, true, false);
            if (st) goto done;
            x->num_patchable += op->u.cond.body->num_patchable;
        }
    }
    /* A launch's event generations are in plan order. */
    for (uint32_t p = 0, slots = 0; num_events && p < n; p++)
        if (x->ops[p].type == MT_OP_EVENT_RECORD || x->ops[p].type == MT_OP_EVENT_WAIT)
            x->nodes[p].slot = slots++;
    if (cross_stream && !cross_stream_preds(x, f, position)) goto oom;
    goto done;
oom:
    st = mt_oom();
done:
    /* Ops not reached stay EMPTY, harmless for plan_free. */
    if (!laid_out)
        for (uint32_t p = 0; p < n; p++) x->ops[p].type = MT_OP_EMPTY;
    else
        for (uint32_t v = done_until; v < n; v++) x->ops[x->position[v]].type = MT_OP_EMPTY;
    free(scratch);
    return st;
}

/* The fusion pass (fuse.c) over a flattened graph: f keeps only the nodes left, *fu holds
 * the fused launches they point to until the plan has its copies. */
static mtiart_status fuse_flat(flat *f, mt_fusion *fu) {
    memset(fu, 0, sizeof *fu);
    mt_fuse_node *view = malloc((f->n ? f->n : 1) * sizeof *view);
    MT_CHECK_ALLOC(view);
    for (uint32_t v = 0; v < f->n; v++) {
        const flat_node *node = &f->nodes[v];
        view[v] = (mt_fuse_node){node->op, node->deps, node->num_deps,
                                 f->origins ? f->origins[node->origin].parent : NONE};
    }
    mtiart_status st = mt_fuse_plan(view, f->n, fu);
    free(view);
    if (st || !fu->num_groups) return st;
    flat_node *left = malloc(fu->m * sizeof *left);
    if (!left) {
        mt_fusion_free(fu);
        return mt_oom();
    }
    for (uint32_t i = 0; i < fu->m; i++) {
        left[i] = f->nodes[fu->kept[i]];
        left[i].op = fu->nodes[i].op;
        left[i].deps = fu->nodes[i].deps;
        left[i].num_deps = fu->nodes[i].num_deps;
    }
    free(f->nodes);
    f->nodes = left;
    f->n = fu->m;
    return MTIART_SUCCESS;
}

/* After build_plan over what fusion left: positions and chains by flattened node. */
static mtiart_status keep_fusion(mt_plan *x, mt_fusion *fu, uint32_t num_flat) {
    uint32_t *position = malloc(num_flat * sizeof *position);
    uint16_t *nargs = malloc(fu->num_groups * sizeof *nargs);
    if (!position || !nargs) {
        free(position);
        free(nargs);
        return mt_oom();
    }
    for (uint32_t k = 0; k < fu->num_groups; k++) memcpy(&nargs[k], mt_op_blob(&fu->ops[k]), 2);
    x->fused_nargs = nargs;
    for (uint32_t v = 0; v < num_flat; v++) position[v] = x->position[fu->left[v]];
    free(x->position);
    x->position = position;
    x->num_fused = fu->num_groups;
    x->fused_group = fu->group;
    x->fused_begin = fu->member_begin;
    x->fused_members = fu->members;
    fu->group = fu->member_begin = fu->members = NULL;
    return MTIART_SUCCESS;
}

/* The plan of dag `d`; event nodes are refused in a body (which runs a number of times
 * known only at run time). `fuse`: let the fusion pass fuse chains of kernel nodes. */
static mtiart_status plan_build(mt_plan **out, const mt_dag *d, mt_device *dev, bool body,
                                bool fuse) {
    if (d->num_nodes > UINT32_MAX / 2)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "graph too large");
    mtiart_status st;
    if (body && (st = mt_check_conditional_body(d))) return st;
    mt_plan *x =
        aligned_alloc(MT_CACHELINE, (sizeof *x + MT_CACHELINE - 1) / MT_CACHELINE * MT_CACHELINE);
    MT_CHECK_ALLOC(x);
    memset(x, 0, sizeof *x);
    x->dev = dev;
    x->label = body ? "body node" : "graph node";
    flat f;
    st = flat_build(&f, d);
    if (st) {
        free(x);
        return st;
    }
    x->num_flat = f.n;
    x->num_patchable = f.n;
    mt_fusion fu = {0};
    if (fuse) st = fuse_flat(&f, &fu);
    /* build_plan writes every node and op (ops it does not reach are left EMPTY); the
     * calls start empty, all counted indirect until build_plan sets each */
    x->nodes = malloc((f.n ? f.n : 1) * sizeof *x->nodes);
    x->calls = calloc(f.n ? f.n : 1, sizeof *x->calls);
    x->num_indirect = f.n;
    x->ops = aligned_alloc(MT_CACHELINE, (f.n ? f.n : 1) * sizeof *x->ops);
    if (!st && (!x->nodes || !x->calls || !x->ops)) st = mt_oom();
    if (!st) {
        x->num_nodes = f.n;
        st = build_plan(x, &f);
    }
    if (!st && fu.num_groups) st = keep_fusion(x, &fu, x->num_flat);
    mt_fusion_free(&fu);
    if (!st && f.origins) {
        x->origins = f.origins;
        x->top_flat = f.top_flat;
        f.origins = NULL;
        f.top_flat = NULL;
    }
    flat_free(&f);
    if (st) {
        plan_free(x);
        return st;
    }
    *out = x;
    return MTIART_SUCCESS;
}

/* The event slots of an executable: one per record or wait node, in plan order. */
static mtiart_status collect_slots(mt_exec *x) {
    mt_plan *p = x->plan;
    for (uint32_t i = 0; i < p->num_nodes; i++) x->num_slots += p->nodes[i].slot != NONE;
    if (!x->num_slots) return MTIART_SUCCESS;
    x->slot_event = calloc(x->num_slots, sizeof *x->slot_event);
    x->slot_record = calloc(x->num_slots, sizeof *x->slot_record);
    x->launch_slots = calloc(x->num_slots, sizeof *x->launch_slots);
    if (!x->slot_event || !x->slot_record || !x->launch_slots) return mt_oom();
    for (uint32_t i = 0; i < p->num_nodes; i++) {
        const xnode *n = &p->nodes[i];
        if (n->slot == NONE) continue;
        mt_event_ref(n->op->u.event.event);
        x->slot_event[n->slot] = n->op->u.event.event;
        x->slot_record[n->slot] = n->op->type == MT_OP_EVENT_RECORD;
    }
    return MTIART_SUCCESS;
}

/* The memory nodes of an executable (top-level nodes of its graph: bodies have none). */
static mtiart_status collect_mem_nodes(mt_exec *x) {
    const mt_dag *d = x->tmpl;
    for (size_t i = 0; i < d->num_nodes; i++) {
        const mt_op *op = &d->nodes[i].op;
        if (op->type != MT_OP_MEM_ALLOC && op->type != MT_OP_MEM_FREE) continue;
        mt_mem_node *grown = realloc(x->mem_nodes, (x->num_mem_nodes + 1) * sizeof *grown);
        MT_CHECK_ALLOC(grown);
        x->mem_nodes = grown;
        mt_graph_alloc_ref(op->u.mem.alloc);
        x->mem_nodes[x->num_mem_nodes++] =
            (mt_mem_node){op->u.mem.alloc, (uint32_t)i, op->type, false};
    }
    /* An allocation both allocated and freed here is the replay's own affair. */
    for (size_t i = 0; i < x->num_mem_nodes; i++)
        for (size_t k = 0; k < x->num_mem_nodes; k++)
            if (k != i && x->mem_nodes[k].alloc == x->mem_nodes[i].alloc &&
                x->mem_nodes[k].kind != x->mem_nodes[i].kind)
                x->mem_nodes[i].own = true;
    return MTIART_SUCCESS;
}

/* The flags instantiation knows; a bit beyond them is refused (it may mean something to a
 * newer library). */
#define KNOWN_INSTANTIATE_FLAGS                                                                    \
    (MTIART_GRAPH_INSTANTIATE_CHECK_INPUT_LIVENESS |                                               \
     MTIART_GRAPH_INSTANTIATE_AUTO_FREE_ON_LAUNCH | MTIART_GRAPH_INSTANTIATE_CHECK_RACES |         \
     MTIART_GRAPH_INSTANTIATE_NO_FUSION | MTIART_GRAPH_INSTANTIATE_FUSION)

MTIART_API mtiart_status mtiart_graph_instantiate_with_flags(mtiart_graph graph, uint64_t flags,
                                                             mtiart_graph_exec *exec) {
    MT_API_ENTRY();
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    MT_CHECK_NOT_NULL(exec);
    if (flags & ~(uint64_t)KNOWN_INSTANTIATE_FLAGS)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "unknown instantiate flags 0x%llx",
                            (unsigned long long)(flags & ~(uint64_t)KNOWN_INSTANTIATE_FLAGS));
    if (flags & MTIART_GRAPH_INSTANTIATE_NO_FUSION && flags & MTIART_GRAPH_INSTANTIATE_FUSION)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "MTIART_GRAPH_INSTANTIATE_NO_FUSION and "
                                                        "MTIART_GRAPH_INSTANTIATE_FUSION together");
    mtiart_status st;
    if ((flags & MTIART_GRAPH_INSTANTIATE_CHECK_RACES) && (st = mt_dag_refuse_races(g->dag)))
        return st;
    bool fuse = flags & MTIART_GRAPH_INSTANTIATE_FUSION      ? true
                : flags & MTIART_GRAPH_INSTANTIATE_NO_FUSION ? false
                                                             : mt_graph_fusion;
    /* A loaded graph's unbound inputs and outputs have no addresses yet: what fuses is
     * known only once they are bound. */
    if (g->dag->placeholders) fuse = false;
    if (!g->order && !(g->order = replay_order_new())) return mt_oom();
    mt_exec *x = aligned_alloc(MT_CACHELINE, sizeof *x); /* a multiple of the line: MT_ALIGNED */
    MT_CHECK_ALLOC(x);
    memset(x, 0, sizeof *x);
    atomic_init(&x->refcount, 1);
    pthread_mutex_init(&x->lock, NULL);
    x->dev = g->dev;
    x->flags = flags;
    atomic_fetch_add_explicit(&g->order->refs, 1, memory_order_relaxed);
    x->order = g->order;
    x->done = g->order->done;
    mt_dag_ref(g->dag);
    x->tmpl = g->dag;
    /* Its own holds: the graph may be destroyed while the executable still replays. */
    mt_graph_mem *mem = NULL;
    if (g->mem &&
        !(mem = mt_graph_mem_copy(g->mem, flags & MTIART_GRAPH_INSTANTIATE_CHECK_INPUT_LIVENESS))) {
        exec_free(x);
        return MTIART_ERROR_OUT_OF_MEMORY;
    }
    atomic_init(&x->mem, mem);
    st = plan_build(&x->plan, g->dag, g->dev, false, fuse);
    if (st == MTIART_SUCCESS) st = collect_slots(x);
    if (st == MTIART_SUCCESS) st = collect_mem_nodes(x);
    if (st == MTIART_SUCCESS && (g->artifact || g->dag->placeholders))
        st = mt_bindings_new(g, &x->bindings);
    if (st) {
        exec_free(x);
        return st;
    }
    mt_dag_ref(g->dag); /* what the plan's positions point at, whatever updates do */
    x->plan->src_dag = g->dag;
    if (g->pool) {
        mt_pool_retain(g->pool);
        x->pool = g->pool;
    }
    if ((x->pool_order = g->pool_order)) mt_pool_order_hold(x->pool_order, g->pool_seq, 1);
    x->pool_seq = g->pool_seq;
    st = mt_handle_register(x, MT_KIND_EXEC, release_exec, &x->handle);
    if (st) return st;
    *exec = (mtiart_graph_exec)(uintptr_t)x->handle;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_graph_instantiate(mtiart_graph graph, mtiart_graph_exec *exec) {
    MT_API_ENTRY();
    return mtiart_graph_instantiate_with_flags(graph, 0, exec);
}

MTIART_API mtiart_status mtiart_graph_exec_check_races(mtiart_graph_exec exec, mtiart_race *races,
                                                       size_t capacity, size_t *count) {
    MT_API_ENTRY();
    LOOKUP_EXEC(x, exec);
    pthread_mutex_lock(&x->lock);
    mtiart_status st = mt_dag_check_races(x->tmpl, races, capacity, count);
    pthread_mutex_unlock(&x->lock);
    return st;
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
    *count = x->plan->num_flat; /* fused or not */
    return MTIART_SUCCESS;
}

size_t mt_exec_plan_nodes(const mt_exec *x) { return x->plan->num_nodes; }

/* ------------------------------------------------------------------ launch */

mt_dag *mt_exec_template(mt_exec *x) {
    pthread_mutex_lock(&x->lock);
    mt_dag *t = x->tmpl;
    mt_dag_ref(t);
    pthread_mutex_unlock(&x->lock);
    return t;
}

/* The input check of a launch found input i of record m dead: the error, naming the node
 * (top-level: a child or conditional node for what its body reads) and the buffer. */
static __attribute__((noinline, cold)) mtiart_status dead_input(mt_exec *x, const mt_graph_mem *m,
                                                                long i) {
    uint32_t node;
    uint64_t address, bytes;
    bool reused;
    mt_graph_mem_input(m, (size_t)i, &node, &address, &bytes, &reused);
    char name[96] = "?";
    pthread_mutex_lock(&x->lock);
    if (node < x->tmpl->num_nodes) mt_node_name(&x->tmpl->nodes[node], name, sizeof name);
    pthread_mutex_unlock(&x->lock);
    return mt_set_error(MTIART_ERROR_INVALID_POINTER,
                        "input check: graph node %u (%s) reads [0x%llx, +%llu bytes), memory "
                        "the program freed after it was captured%s; nothing was launched",
                        node, name, (unsigned long long)address, (unsigned long long)bytes,
                        reused ? " and that now belongs to another allocation" : "");
}

MTIART_API mtiart_status mtiart_graph_launch(mtiart_graph_exec exec, mtiart_stream stream) {
    MT_API_ENTRY();
    LOOKUP_EXEC(x, exec);
    LOOKUP_STREAM(s, stream);
    if (s->dev != x->dev)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "graph belongs to device %d, the stream to device %d", x->dev->index,
                            s->dev->index);
    if (MT_UNLIKELY(x->bindings != NULL)) {
        mtiart_status st = mt_bindings_check(x->bindings);
        if (st) return st;
    }
    /* A replaced record is kept until the executable goes: reading it unlocked is safe. */
    mt_graph_mem *mem = atomic_load_explicit(&x->mem, memory_order_acquire);
    if (atomic_load(&s->capture)) {
        if (x->num_mem_nodes)
            return mt_set_error(MTIART_ERROR_NOT_SUPPORTED,
                                "the executable has memory nodes, which a child graph cannot "
                                "have: it cannot be launched into a capture");
        /* A child graph node of the capture, running what this executable runs; the
         * capture holds the memory it uses. */
        mtiart_status st = mt_capture_child(s, mt_exec_template(x), mem);
        if (st != MTIART_ERROR_NOT_CAPTURING) return st;
        /* the capture ended meanwhile: an ordinary launch */
    }
    if (MT_UNLIKELY(x->flags & MTIART_GRAPH_INSTANTIATE_CHECK_INPUT_LIVENESS) && mem) {
        long dead = mt_graph_mem_dead_input(mem);
        if (dead >= 0) return dead_input(x, mem, dead);
    }
    bool checked = x->pool_order && mt_pool_order_shared(x->pool_order);
    if (MT_UNLIKELY(checked)) {
        mtiart_status st = mt_pool_order_launch(x->pool_order, x->pool_seq, s->id);
        if (st) return st;
    }
    uint64_t *heap = NULL;
    if (x->num_slots > INLINE_SLOTS && !(heap = malloc(x->num_slots * sizeof *heap)))
        return mt_oom();
    mt_replay_order *order = x->order;
    bool auto_free = x->flags & MTIART_GRAPH_INSTANTIATE_AUTO_FREE_ON_LAUNCH;
    mt_spin_lock(&order->lock);
    mtiart_status st = mt_graph_allocs_check(x->mem_nodes, x->num_mem_nodes, auto_free);
    /* On another stream than the previous launch, wait for that launch to finish. */
    if (st == MTIART_SUCCESS && order->last_stream_id != s->id)
        st = mt_stream_enqueue_wait(s, order->done, atomic_load(&order->done->recorded));
    if (st == MTIART_SUCCESS) {
        mt_op op = {.type = MT_OP_GRAPH, .num_blocks = 1};
        mt_exec_ref(x);
        op.u.graph.exec = x;
        op.u.graph.generation = atomic_load(&order->done->recorded) + 1;
        op.u.graph.slots = heap;
        op.u.graph.checks = (checked ? MT_LAUNCH_POOL_ORDER : 0) | x->schedule_bits;
        /* Record nodes reserve the generation they complete, wait nodes take the record
         * they wait for; the records are published once the launch is in the queue. */
        for (uint32_t k = 0; MT_UNLIKELY(k < x->num_slots); k++) {
            mt_event *e = x->slot_event[k];
            if (x->slot_record[k]) {
                x->launch_slots[k] = atomic_fetch_add(&e->reserved, 1) + 1;
                e->capture = NULL; /* as for an eager record */
            } else {
                x->launch_slots[k] = atomic_load(&e->recorded);
            }
        }
        if (x->num_slots)
            memcpy(launch_slots(&op), x->launch_slots, x->num_slots * sizeof *x->launch_slots);
        heap = NULL; /* the op's now, released with it */
        /* Straight into the queue, as the wait above: a capture the stream began since
         * the check comes after this launch. */
        st = mt_stream_enqueue(s, &op);
        if (st == MTIART_SUCCESS) {
            /* Release: only launches and updates, under the order's lock, read it; a
             * seq_cst store would add a full barrier to every launch. */
            atomic_store_explicit(&order->done->recorded, op.u.graph.generation,
                                  memory_order_release);
            order->last_stream_id = s->id;
            for (uint32_t k = 0; k < x->num_slots; k++)
                if (x->slot_record[k])
                    mt_event_publish_record(x->slot_event[k], x->launch_slots[k]);
            mt_graph_allocs_launched(x->mem_nodes, x->num_mem_nodes, s, auto_free);
        }
    }
    mt_spin_unlock(&order->lock);
    if (MT_UNLIKELY(heap != NULL)) free(heap);
    return st;
}

/* ------------------------------------------------------------------ update */

typedef struct update_ctx {
    update *u;
    mtiart_update_info *info;
    size_t top; /* the top-level node being compared */
    mt_event **slot_event;
    mt_exec *x;
    /* fused nodes (the plan has fused_group): per flattened node its new op and top-level
     * node, and per chain whether any of its nodes changed */
    const mt_op **fused_op;
    size_t *fused_top;
    bool *fused_changed;
} update_ctx;

static mtiart_status refuse_update(update_ctx *c, mtiart_update_result result, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static mtiart_status refuse_update(update_ctx *c, mtiart_update_result result, const char *fmt,
                                   ...) {
    char detail[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (c->info) {
        c->info->result = result;
        c->info->node = c->top;
    }
    return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                        "the graph is not an update of the executable: node %zu: %s; the "
                        "executable is unchanged",
                        c->top, detail);
}

/* Room was made for every node (new_update). */
static bool add_patch(update *u, mt_plan *plan, uint32_t pos, mt_op *from) {
    if (mt_op_clone(&u->ops[u->count], from) != MTIART_SUCCESS) return false;
    u->targets[u->count++] = (patch_target){plan, pos};
    return true;
}

static bool same_deps(const mt_node *a, const mt_node *b) {
    if (a->num_deps != b->num_deps) return false;
    uint32_t i = 0;
    while (i < a->num_deps && a->deps[i] == b->deps[i]) i++;
    if (i == a->num_deps) return true;
    for (i = 0; i < a->num_deps; i++) { /* the same set in another order */
        bool found = false;
        for (uint32_t k = 0; k < b->num_deps && !found; k++) found = a->deps[i] == b->deps[k];
        if (!found) return false;
    }
    return true;
}

static const char *kind_name(uint32_t type) {
    static const char *names[] = {"kernel",       "memcpy",      "fill",      "host",
                                  "event record", "event wait",  "empty",     "graph",
                                  "child graph",  "conditional", "mem alloc", "mem free"};
    return type < sizeof names / sizeof *names ? names[type] : "unknown";
}

/* Compare `nd` (the new graph) with `od` (what plan `plan` runs), node by node, and note a
 * patch for every node whose parameters changed. `flat` and `slot` count the flattened
 * nodes and event slots as instantiation did. */
static mtiart_status compare(update_ctx *c, mt_dag *nd, const mt_dag *od, mt_plan *plan,
                             uint32_t *flat, uint32_t *slot, bool top) {
    if (nd->num_nodes != od->num_nodes) {
        if (top) c->top = nd->num_nodes < od->num_nodes ? nd->num_nodes : od->num_nodes;
        return refuse_update(
            c, MTIART_UPDATE_TOPOLOGY_CHANGED, "%s has %zu nodes where the executable's has %zu",
            top ? "the graph" : "a child or conditional body", nd->num_nodes, od->num_nodes);
    }
    for (size_t i = 0; i < nd->num_nodes; i++) {
        mt_node *a = &nd->nodes[i];
        const mt_node *b = &od->nodes[i];
        if (top) c->top = i;
        if (!same_deps(a, b))
            return refuse_update(c, MTIART_UPDATE_TOPOLOGY_CHANGED, "its dependencies differ");
        if (a->op.type != b->op.type)
            return refuse_update(c, MTIART_UPDATE_NODE_KIND_CHANGED, "a %s node where it was a %s",
                                 kind_name(a->op.type), kind_name(b->op.type));
        mtiart_status st;
        if (a->op.type == MT_OP_CHILD) {
            if ((st = compare(c, a->body, b->body, plan, flat, slot, false))) return st;
            continue;
        }
        uint32_t fl = (*flat)++;
        uint32_t pos = plan->position[fl];
        mt_op *now = &plan->ops[pos];
        bool equal = mt_op_equal(&a->op, (mt_op *)&b->op);
        if ((a->op.type == MT_OP_MEM_ALLOC || a->op.type == MT_OP_MEM_FREE) && !equal)
            return refuse_update(c, MTIART_UPDATE_PARAMETERS_UNSUPPORTED,
                                 "a memory node of another allocation (memory nodes cannot "
                                 "change)");
        uint32_t group = plan->fused_group ? plan->fused_group[fl] : NONE;
        if (a->op.type == MT_OP_KERNEL && !equal) {
            uint16_t na, nb;
            memcpy(&na, mt_op_blob(&a->op), 2);
            memcpy(&nb, mt_op_blob((mt_op *)&b->op), 2);
            if (na != nb)
                return refuse_update(c, MTIART_UPDATE_PARAMETERS_UNSUPPORTED,
                                     "the kernel takes %u arguments where it took %u", na, nb);
        } else if (a->op.type == MT_OP_CONDITIONAL) {
            if (a->op.u.cond.kind != b->op.u.cond.kind)
                return refuse_update(c, MTIART_UPDATE_PARAMETERS_UNSUPPORTED,
                                     "a conditional of another type");
            uint32_t body_flat = 0, body_slot = 0;
            if ((st =
                     compare(c, a->body, b->body, now->u.cond.body, &body_flat, &body_slot, false)))
                return st;
        } else if (a->op.type == MT_OP_EVENT_RECORD || a->op.type == MT_OP_EVENT_WAIT) {
            c->slot_event[(*slot)++] = a->op.u.event.event;
        }
        if (group != NONE) { /* the chain's launch is made again (update_fused) */
            c->fused_op[fl] = &a->op;
            c->fused_top[fl] = equal ? SIZE_MAX : c->top;
            c->fused_changed[group] |= !equal;
            continue;
        }
        if (!equal && !add_patch(c->u, plan, pos, &a->op)) return mt_oom();
    }
    return MTIART_SUCCESS;
}

/* The launch of fused chain k made anew from its nodes' new ops[0..len), noted as a patch
 * of the plan node that runs it; MTIART_ERROR_NOT_SUPPORTED (`why` says so) when they do
 * not fuse any more: the chain's launch cannot stand for them. */
static mtiart_status patch_fused(update *u, mt_plan *p, uint32_t k, const mt_op *const *ops,
                                 uint32_t len, char *why, size_t cap) {
    mt_op fused;
    mtiart_status st = mt_fuse_chain(ops, len, &fused);
    if (st == MTIART_ERROR_NOT_SUPPORTED) {
        snprintf(why, cap,
                 "it runs fused with %u other nodes into one launch, which its new parameters "
                 "do not allow (instantiate with MTIART_GRAPH_INSTANTIATE_NO_FUSION to change them "
                 "freely)",
                 len - 1);
        return st;
    }
    if (st) return st;
    uint16_t nargs;
    memcpy(&nargs, mt_op_blob(&fused), 2);
    if (nargs != p->fused_nargs[k]) { /* buffers that were one are apart now, or the reverse */
        mt_op_release(&fused);
        snprintf(why, cap,
                 "it runs fused with %u other nodes into one launch of %u distinct buffers, "
                 "which its new parameters change to %u (instantiate with "
                 "MTIART_GRAPH_INSTANTIATE_NO_FUSION to change them freely)",
                 len - 1, p->fused_nargs[k] - 1u, nargs - 1u);
        return MTIART_ERROR_NOT_SUPPORTED;
    }
    bool ok = add_patch(u, p, p->position[p->fused_members[p->fused_begin[k]]], &fused);
    mt_op_release(&fused);
    return ok ? MTIART_SUCCESS : mt_oom();
}

static void free_fused_ctx(update_ctx *c) {
    free(c->fused_op);
    free(c->fused_top);
    free(c->fused_changed);
}

/* After compare: the fused chains any of whose nodes changed get their launch anew. */
static mtiart_status update_fused(update_ctx *c, mt_plan *p) {
    for (uint32_t k = 0; k < p->num_fused; k++) {
        if (!c->fused_changed[k]) continue;
        const mt_op *ops[MT_FUSE_MAX_CHAIN];
        uint32_t len = 0;
        for (uint32_t i = p->fused_begin[k]; i < p->fused_begin[k + 1]; i++)
            ops[len++] = c->fused_op[p->fused_members[i]];
        char why[256];
        mtiart_status st = patch_fused(c->u, p, k, ops, len, why, sizeof why);
        if (st == MTIART_ERROR_NOT_SUPPORTED) {
            /* the chain's first node that changed */
            for (uint32_t i = p->fused_begin[k + 1]; i-- > p->fused_begin[k];)
                if (c->fused_top[p->fused_members[i]] != SIZE_MAX)
                    c->top = c->fused_top[p->fused_members[i]];
            return refuse_update(c, MTIART_UPDATE_PARAMETERS_UNSUPPORTED, "%s", why);
        }
        if (st) return st;
    }
    return MTIART_SUCCESS;
}

/* Hand the patches to the replays launched from now on; and the event slots, which the
 * launches themselves read. */
static void link_update(mt_exec *x, update *u, mt_event **slot_event) {
    mt_spin_lock(&x->order->lock);
    u->generation = atomic_load(&x->order->done->recorded) + 1;
    for (uint32_t k = 0; slot_event && k < x->num_slots; k++)
        if (slot_event[k] != x->slot_event[k]) {
            mt_event_ref(slot_event[k]);
            mt_event_unref(x->slot_event[k]);
            x->slot_event[k] = slot_event[k];
        }
    mt_spin_lock(&x->update_lock);
    if (x->updates_tail) x->updates_tail->next = u;
    else x->updates = u;
    x->updates_tail = u;
    atomic_store_explicit(&x->has_updates, 1, memory_order_release);
    mt_spin_unlock(&x->update_lock);
    mt_spin_unlock(&x->order->lock);
}

/* Make `mem` (owned; may be NULL) the record launches check and hold from now on; the one it
 * replaces is kept for the replays launched before (x's lock held). */
static mtiart_status replace_mem(mt_exec *x, mt_graph_mem *mem) {
    mt_graph_mem *old = atomic_load(&x->mem);
    if (old) {
        mt_graph_mem **grown =
            realloc(x->retired_mem, (x->num_retired_mem + 1) * sizeof *x->retired_mem);
        if (!grown) {
            mt_graph_mem_free(mem);
            return mt_oom();
        }
        x->retired_mem = grown;
        x->retired_mem[x->num_retired_mem++] = old;
    }
    atomic_store_explicit(&x->mem, mem, memory_order_release);
    return MTIART_SUCCESS;
}

static mtiart_status keep_pool(mt_exec *x, mt_pool *pool) {
    if (!pool || pool == x->pool) return MTIART_SUCCESS;
    for (size_t i = 0; i < x->num_update_pools; i++)
        if (x->update_pools[i] == pool) return MTIART_SUCCESS;
    mt_pool **grown = realloc(x->update_pools, (x->num_update_pools + 1) * sizeof *grown);
    MT_CHECK_ALLOC(grown);
    x->update_pools = grown;
    mt_pool_retain(pool);
    x->update_pools[x->num_update_pools++] = pool;
    return MTIART_SUCCESS;
}

mtiart_status mt_exec_update_dag(mt_exec *x, mt_dag *dag, mt_pool *pool, const mt_graph_mem *mem,
                                 mtiart_update_info *info) {
    update_ctx c = {.info = info, .x = x};
    /* A graph that matches has as many nodes to patch as the plan, bodies included. */
    c.u = new_update(x->plan->num_patchable);
    c.slot_event = calloc(x->num_slots ? x->num_slots : 1, sizeof *c.slot_event);
    if (!c.u || !c.slot_event) {
        if (c.u) free_update(c.u);
        free(c.slot_event);
        return mt_oom();
    }
    mt_plan *p = x->plan;
    if (p->fused_group) {
        c.fused_op = malloc(p->num_flat * sizeof *c.fused_op);
        c.fused_top = malloc(p->num_flat * sizeof *c.fused_top);
        c.fused_changed = calloc(p->num_fused, sizeof *c.fused_changed);
    }
    if (p->fused_group && (!c.fused_op || !c.fused_top || !c.fused_changed)) {
        free_update(c.u);
        free(c.slot_event);
        free_fused_ctx(&c);
        return mt_oom();
    }
    pthread_mutex_lock(&x->lock);
    uint32_t flat = 0, slot = 0;
    mtiart_status st = compare(&c, dag, x->tmpl, p, &flat, &slot, true);
    if (st == MTIART_SUCCESS && p->fused_group) st = update_fused(&c, p);
    if (st == MTIART_SUCCESS) st = keep_pool(x, pool);
    /* It holds (and checks) what the graph's nodes use from now on. */
    mt_graph_mem *held = NULL;
    if (st == MTIART_SUCCESS && mem &&
        !(held = mt_graph_mem_copy(mem, x->flags & MTIART_GRAPH_INSTANTIATE_CHECK_INPUT_LIVENESS)))
        st = MTIART_ERROR_OUT_OF_MEMORY;
    if (st == MTIART_SUCCESS) st = replace_mem(x, held);
    if (st == MTIART_SUCCESS) {
        mt_dag_ref(dag);
        mt_dag_unref(x->tmpl);
        x->tmpl = dag;
        bool events_changed = false;
        for (uint32_t k = 0; k < x->num_slots; k++)
            events_changed |= c.slot_event[k] != x->slot_event[k];
        if (c.u->count || events_changed) link_update(x, c.u, events_changed ? c.slot_event : NULL);
        else free_update(c.u);
    } else {
        free_update(c.u);
    }
    pthread_mutex_unlock(&x->lock);
    free(c.slot_event);
    free_fused_ctx(&c);
    return st;
}

/* New arguments (op `fresh`) for top-level node `node`, flattened node `flat` of fused
 * chain k, whose other nodes keep the template's ops. */
static mtiart_status set_fused_args(update *u, mt_plan *p, const mt_dag *t, uint32_t k,
                                    uint32_t flat, const mt_op *fresh, size_t node) {
    const mt_op *ops[MT_FUSE_MAX_CHAIN];
    uint32_t len = 0;
    for (uint32_t i = p->fused_begin[k]; i < p->fused_begin[k + 1]; i++) {
        uint32_t member = p->fused_members[i];
        ops[len] = member == flat ? fresh : NULL;
        /* A chain keeps to one graph: its nodes are top-level nodes, as this one. */
        for (size_t v = 0; !ops[len] && v < t->num_nodes; v++)
            if ((p->top_flat ? p->top_flat[v] : v) == member) ops[len] = &t->nodes[v].op;
        len++;
    }
    char why[256];
    mtiart_status st = patch_fused(u, p, k, ops, len, why, sizeof why);
    if (st == MTIART_ERROR_NOT_SUPPORTED)
        return mt_set_error(st, "node %zu: %s; the executable is unchanged", node, why);
    return st;
}

MTIART_API mtiart_status mtiart_graph_exec_update(mtiart_graph_exec exec, mtiart_graph graph,
                                                  mtiart_update_info *info) {
    MT_API_ENTRY();
    LOOKUP_EXEC(x, exec);
    LOOKUP_GRAPH(g, graph);
    LOCK_GRAPH(g);
    if (info) *info = (mtiart_update_info){.result = MTIART_UPDATE_SUCCESS, .node = UINT64_MAX};
    if (g->dev != x->dev) {
        if (info) info->result = MTIART_UPDATE_DEVICE_CHANGED;
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "the graph belongs to device %d, the executable to device %d",
                            g->dev->index, x->dev->index);
    }
    if (g->dag->placeholders)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE,
                            "the graph is a loaded graph whose inputs or outputs are not bound: "
                            "bind them on an executable of it instead");
    return mt_exec_update_dag(x, g->dag, g->pool, g->mem, info);
}

mt_device *mt_exec_device(const mt_exec *x) { return x->dev; }

mt_bindings *mt_exec_bindings(const mt_exec *x) { return x->bindings; }

size_t mt_exec_pools(mt_exec *x, mt_pool **out, size_t cap) {
    pthread_mutex_lock(&x->lock);
    size_t n = 0;
    if (x->pool && n < cap) out[n] = x->pool;
    n += x->pool != NULL;
    for (size_t i = 0; i < x->num_update_pools; i++, n++)
        if (n < cap) out[n] = x->update_pools[i];
    pthread_mutex_unlock(&x->lock);
    return n;
}

MTIART_API mtiart_status mtiart_graph_exec_kernel_node_set_args(mtiart_graph_exec exec, size_t node,
                                                                const mtiart_arg *args,
                                                                uint32_t num_args) {
    MT_API_ENTRY();
    LOOKUP_EXEC(x, exec);
    mtiart_status st = MTIART_SUCCESS;
    pthread_mutex_lock(&x->lock);
    mt_dag *t = x->tmpl;
    mt_plan *p = x->plan;
    uint16_t had = 0;
    /* What the new arguments name is held from now on: recorded in a copy of the record,
     * which the launches take over once the change is made. */
    mt_graph_mem *cur = atomic_load(&x->mem);
    mt_graph_mem *record =
        cur ? mt_graph_mem_copy(cur, false) : mt_graph_mem_new(x->dev, x->pool, 0);
    if (!record) st = mt_oom();
    else if (node >= t->num_nodes) {
        st = mt_set_error(MTIART_ERROR_INVALID_VALUE, "node %zu out of range (%zu nodes)", node,
                          t->num_nodes);
    } else if (t->nodes[node].op.type != MT_OP_KERNEL) {
        st = mt_set_error(MTIART_ERROR_INVALID_VALUE, "node %zu is not a kernel node", node);
    } else if (memcpy(&had, mt_op_blob(&t->nodes[node].op), 2), had != num_args) {
        st = mt_set_error(MTIART_ERROR_INVALID_VALUE,
                          "node %zu takes %u kernel arguments, not %u (an executable's kernel "
                          "keeps its number of arguments)",
                          node, had, num_args);
    } else if (atomic_load(&t->refcount) > 1) {
        /* Shared with the graph it came from (or a capture's child node): a copy first. */
        mt_dag *copy = mt_dag_clone(t);
        if (!copy) st = mt_oom();
        else {
            mt_dag_unref(t);
            x->tmpl = t = copy;
        }
    }
    /* The buffers first, then the replays' copy, then the template: a failure leaves all as
     * they were. */
    update *u = NULL;
    mt_op fresh;
    if (st == MTIART_SUCCESS)
        st = mt_op_pack_kernel(&fresh, t->nodes[node].op.fn.kernel, t->nodes[node].op.num_blocks,
                               args, num_args);
    mt_graph_mem *checked = NULL;
    if (st == MTIART_SUCCESS) {
        mt_graph_mem_forget_reads(record, node);
        mt_buffer bufs[MT_MAX_ARGS];
        uint32_t n = mt_op_buffers(&fresh, args, num_args, bufs);
        st = mt_check_buffers(x->dev, bufs, n, "graph", record, node);
        if (st == MTIART_SUCCESS &&
            !(checked = mt_graph_mem_copy(
                  record, x->flags & MTIART_GRAPH_INSTANTIATE_CHECK_INPUT_LIVENESS)))
            st = MTIART_ERROR_OUT_OF_MEMORY;
        if (st) mt_op_release(&fresh);
    }
    if (st == MTIART_SUCCESS) {
        uint32_t flat = p->top_flat ? p->top_flat[node] : (uint32_t)node;
        uint32_t group = p->fused_group ? p->fused_group[flat] : NONE;
        if (!(u = new_update(1))) st = mt_oom();
        else if (group != NONE) st = set_fused_args(u, p, t, group, flat, &fresh, node);
        else if (!add_patch(u, p, p->position[flat], &fresh)) st = mt_oom();
        mt_op_release(&fresh);
    }
    if (st == MTIART_SUCCESS)
        st = mt_node_set_kernel_args(&t->nodes[node], args, num_args, NULL, NULL, 0);
    if (st == MTIART_SUCCESS) st = replace_mem(x, checked); /* takes `checked` */
    else mt_graph_mem_free(checked);
    if (st == MTIART_SUCCESS) link_update(x, u, NULL);
    else if (u) free_update(u);
    mt_graph_mem_free(record);
    pthread_mutex_unlock(&x->lock);
    return st;
}
