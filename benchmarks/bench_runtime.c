/*
 * bench_runtime.c - libmtiart's C benchmarks.
 *
 * Every row is a median over several repetitions and comes with a baseline measured in the
 * same process, interleaved with the measured figure rep by rep (a direct C call of the same
 * kernel function, libc malloc/free, memcpy, a two-thread ping-pong, ...), so the ratio
 * holds on a noisy machine even when the absolute figure drifts. This is a benchmark, never
 * a test: it fails (exit 1) only when the runtime reports an error, never because of a time.
 * benchmarks/README.md says what every row measures.
 *
 *   bench_runtime [--quick] [--json] [--filter SUBSTRING]... [--reps N] [--list]
 *                 [--scaling [--workers 1,2,4,8,16]]
 *
 *   --quick    one short pass (CI: proves every benchmark runs; figures are rough)
 *   --json     JSON lines only (one object per row); default: JSON lines, then a table
 *   --filter   run only the rows whose name contains SUBSTRING (repeatable)
 *   --reps N   repetitions per row (default 9, 3 with --quick)
 *   --scaling  only the worker-scaling table, with the worker counts of --workers
 *              (default 1,2,4,8,16); counts above the number of CPUs are marked
 *              oversubscribed
 *
 * Kernel-library operations (mtiart_op_*) are looked up with dlsym, so this program builds
 * and runs against a libmtiart without the kernel library (those rows are then skipped).
 */
#define _GNU_SOURCE
#include "harness.h"

#include <dlfcn.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static mtiart_stream g_stream; /* a created (non-default) stream */

/* ------------------------------------------------------------------ eager */

enum { EAGER_BATCH = 1000 };

typedef struct eager_ctx {
    bench_direct direct;
    int batches;
    bench_samples with_sync;
} eager_ctx;

static double eager_rep(void *p) {
    eager_ctx *c = p;
    double enqueue = 0, total = 0;
    for (int b = 0; b < c->batches; b++) {
        double t0 = bench_now_ns();
        for (int i = 0; i < EAGER_BATCH; i++)
            BENCH_CHECK(mtiart_launch_kernel(g_stream, bench_k_empty, 1, NULL, 0));
        double t1 = bench_now_ns();
        BENCH_CHECK(mtiart_stream_synchronize(g_stream));
        enqueue += t1 - t0;
        total += bench_now_ns() - t0;
    }
    if (c->with_sync.n < BENCH_MAX_REPS)
        c->with_sync.v[c->with_sync.n++] = total / (c->batches * (double)EAGER_BATCH);
    return enqueue / (c->batches * (double)EAGER_BATCH);
}

static void bench_eager(void) {
    int want_enqueue = bench_selected("eager_enqueue");
    int want_sync = bench_selected("eager_op_incl_sync");
    if (!want_enqueue && !want_sync) return;
    eager_ctx c = {.direct = {bench_k_empty, NULL, EAGER_BATCH, bench_cfg.quick ? 10 : 100},
                   .batches = bench_cfg.quick ? 5 : 50};
    bench_fn fns[2] = {eager_rep, bench_direct_rep};
    bench_samples s[2];
    bench_interleave(fns, 2, &c, bench_cfg.reps, 1, s);
    /* the first with_sync sample is the warm-up's */
    bench_samples sync = {.n = c.with_sync.n - 1};
    memcpy(sync.v, c.with_sync.v + 1, sizeof(double) * (size_t)sync.n);
    if (want_enqueue) {
        bench_row *r = bench_new_row("eager_enqueue", "ns/op", 0);
        bench_row_from(r, &s[0], &s[1]);
        r->baseline_name = "direct call of the same (empty) kernel function in a loop";
        r->target = 25;
        bench_set_params(r,
                         "\"batch\": %d, \"batches_per_rep\": %d, \"kernel\": \"empty, 1 block\"",
                         EAGER_BATCH, c.batches);
        bench_set_note(r, "mtiart_launch_kernel, enqueue only: batches of 1000 launches, each "
                          "batch followed by an untimed synchronize");
        bench_finish_row(r);
    }
    if (want_sync) {
        bench_row *r = bench_new_row("eager_op_incl_sync", "ns/op", 0);
        bench_row_from(r, &sync, &s[1]);
        r->baseline_name = "direct call of the same (empty) kernel function in a loop";
        bench_set_params(r, "\"batch\": %d", EAGER_BATCH);
        bench_set_note(r, "batches of 1000 empty launches including the batch's synchronize");
        bench_finish_row(r);
    }
}

/* ------------------------------------------------------------------ eager kernel-library op */

typedef mtiart_status (*op_binary_scalar_fn)(mtiart_stream, mtiart_binary_op,
                                             const mtiart_tensor_desc *, const mtiart_tensor_desc *,
                                             double, int64_t, int);

typedef struct op_ctx {
    bench_direct direct;
    op_binary_scalar_fn op;
    mtiart_tensor_desc d;
    int batches;
    bench_samples with_sync;
} op_ctx;

static double op_rep(void *p) {
    op_ctx *c = p;
    double enqueue = 0, total = 0;
    for (int b = 0; b < c->batches; b++) {
        double t0 = bench_now_ns();
        for (int i = 0; i < EAGER_BATCH; i++)
            BENCH_CHECK(c->op(g_stream, MTIART_BINARY_ADD, &c->d, &c->d, 1.0, 0, 0));
        double t1 = bench_now_ns();
        BENCH_CHECK(mtiart_stream_synchronize(g_stream));
        enqueue += t1 - t0;
        total += bench_now_ns() - t0;
    }
    if (c->with_sync.n < BENCH_MAX_REPS)
        c->with_sync.v[c->with_sync.n++] = total / (c->batches * (double)EAGER_BATCH);
    return enqueue / (c->batches * (double)EAGER_BATCH);
}

/* The kernel the library launches for `op` on `buf`, from the kernel_probe program: its
 * function (the same file is mapped here, at another base) and its argument pointers
 * rebuilt over this process's buffer. Returns NULL and a reason on failure. */
typedef struct probed_kernel {
    mtiart_kernel_fn fn;
    uint32_t num_blocks, nargs;
    void *argv[16];
    unsigned char values[16][256];
    void *buffers[16];
} probed_kernel;

static int hexval(int ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

static const char *probe_kernel(probed_kernel *k, void *buf) {
    static char reason[256];
    char probe[4096], out[8192];
    if (bench_sibling_path("kernel_probe", probe, sizeof probe) != 0 || access(probe, X_OK) != 0)
        return "the kernel_probe program is not next to bench_runtime";
    char *argv[] = {probe, "add_scalar_f32_1", NULL};
    if (bench_run_child(argv, NULL, out, sizeof out) != 0) return "kernel_probe failed";
    if (strncmp(out, "OK ", 3) != 0) {
        out[strcspn(out, "\n")] = '\0';
        snprintf(reason, sizeof reason, "kernel_probe: %.200s", out);
        return reason;
    }
    char path[PATH_MAX];
    unsigned long offset;
    int used;
    if (sscanf(out + 3, "%4095s %lu %u %u%n", path, &offset, &k->num_blocks, &k->nargs, &used) !=
            4 ||
        k->nargs > 16)
        return "kernel_probe printed something unexpected";
    Dl_info here;
    if (!dladdr((void *)mtiart_init, &here) || !here.dli_fname)
        return "libmtiart is not found in this process";
    char a[PATH_MAX], b[PATH_MAX];
    if (!realpath(path, a) || !realpath(here.dli_fname, b) || strcmp(a, b) != 0)
        return "kernel_probe loaded another libmtiart than this program";
    void *fn = (char *)here.dli_fbase + offset;
    memcpy(&k->fn, &fn, sizeof fn);
    const char *p = out + 3 + used;
    for (uint32_t i = 0; i < k->nargs; i++) {
        char kind;
        int n;
        if (sscanf(p, " %c%n", &kind, &n) != 1) return "kernel_probe: truncated arguments";
        p += n;
        if (kind == 'V') {
            unsigned size;
            if (sscanf(p, " %u %n", &size, &n) != 1 || size > sizeof k->values[i])
                return "kernel_probe: bad value argument";
            p += n;
            for (unsigned j = 0; j < size; j++, p += 2) {
                int hi = hexval(p[0]), lo = hi < 0 ? -1 : hexval(p[1]);
                if (lo < 0) return "kernel_probe: bad value bytes";
                k->values[i][j] = (unsigned char)(hi * 16 + lo);
            }
            k->argv[i] = k->values[i];
        } else {
            unsigned akind;
            unsigned long long extent;
            int index;
            if (sscanf(p, " %u %llu %d%n", &akind, &extent, &index, &n) != 3 || index != 0)
                return "kernel_probe: a buffer argument that is not the operand";
            p += n;
            k->buffers[i] = buf;
            k->argv[i] = &k->buffers[i];
        }
    }
    return NULL;
}

static void bench_op_add_scalar(void) {
    if (!bench_selected("op_add_scalar_enqueue")) return;
    bench_row *r = bench_new_row("op_add_scalar_enqueue", "ns/op", 0);
    bench_set_note(r, "mtiart_op_binary_scalar ADD in place on a 1-element float32 tensor (what "
                      "Python's t.add_(1) calls), enqueue only; batches of 1000, then an "
                      "untimed synchronize");
    op_ctx c = {.batches = bench_cfg.quick ? 5 : 50};
    *(void **)&c.op = dlsym(RTLD_DEFAULT, "mtiart_op_binary_scalar");
    if (!c.op) {
        bench_set_skipped(r, "mtiart_op_binary_scalar is not in this libmtiart");
        bench_finish_row(r);
        return;
    }
    void *buf;
    BENCH_CHECK(mtiart_malloc(0, sizeof(float), &buf));
    BENCH_CHECK(mtiart_memset_async(g_stream, buf, 0, sizeof(float)));
    BENCH_CHECK(mtiart_stream_synchronize(g_stream));
    c.d = (mtiart_tensor_desc){.data = buf, .dtype = MTIART_DTYPE_FLOAT32, .ndim = 1, .shape = {1}};
    probed_kernel k;
    memset(&k, 0, sizeof k);
    const char *why = probe_kernel(&k, buf);
    if (why) {
        bench_set_skipped(r, "no baseline: %s", why);
        bench_finish_row(r);
        BENCH_CHECK(mtiart_free(buf));
        return;
    }
    c.direct = (bench_direct){k.fn, k.argv, EAGER_BATCH, bench_cfg.quick ? 10 : 100};
    bench_fn fns[2] = {op_rep, bench_direct_rep};
    bench_samples s[2];
    bench_interleave(fns, 2, &c, bench_cfg.reps, 1, s);
    bench_row_from(r, &s[0], &s[1]);
    r->baseline_name = "direct call of the kernel library's binary-scalar kernel on the same "
                       "arguments and data";
    bench_samples sync = {.n = c.with_sync.n - 1};
    memcpy(sync.v, c.with_sync.v + 1, sizeof(double) * (size_t)sync.n);
    bench_set_params(r,
                     "\"batch\": %d, \"batches_per_rep\": %d, \"incl_sync_ns_per_op\": %.4g, "
                     "\"kernel_blocks\": %u",
                     EAGER_BATCH, c.batches, bench_median(sync.v, sync.n), k.num_blocks);
    bench_finish_row(r);
    BENCH_CHECK(mtiart_stream_synchronize(g_stream));
    BENCH_CHECK(mtiart_free(buf));
}

/* ------------------------------------------------------------------ round trips */

/* Baseline of the round trips: one message to a spinning thread and back. */
typedef struct pingpong {
    atomic_int flag; /* 0 idle, 1 ping, 2 pong, 3 stop */
    pthread_t thread;
} pingpong;

static void *pong_main(void *p) {
    pingpong *pp = p;
    for (;;) {
        int f = atomic_load_explicit(&pp->flag, memory_order_acquire);
        if (f == 3) return NULL;
        if (f == 1) atomic_store_explicit(&pp->flag, 2, memory_order_release);
        else __builtin_ia32_pause();
    }
}

typedef struct roundtrip_ctx {
    pingpong pp;
    mtiart_graph_exec exec; /* NULL: an eager launch */
    int iterations;
} roundtrip_ctx;

/* Chunked like bench_time_roundtrips. */
static double pingpong_rep(void *p) {
    roundtrip_ctx *c = p;
    pingpong *pp = &c->pp;
    usleep(1000); /* let the runtime's workers stop spinning and fall asleep */
    /* the partner starts per rep so it does not steal a core from the runtime's workers
     * while the measured figure runs */
    atomic_store(&pp->flag, 0);
    pthread_create(&pp->thread, NULL, pong_main, pp);
    double chunks[BENCH_ROUNDTRIP_CHUNKS];
    int per_chunk = c->iterations / BENCH_ROUNDTRIP_CHUNKS;
    for (int k = 0; k < BENCH_ROUNDTRIP_CHUNKS; k++) {
        double t0 = bench_now_ns();
        for (int i = 0; i < per_chunk; i++) {
            atomic_store_explicit(&pp->flag, 1, memory_order_release);
            while (atomic_load_explicit(&pp->flag, memory_order_acquire) != 2)
                __builtin_ia32_pause();
        }
        chunks[k] = (bench_now_ns() - t0) / per_chunk / 1000.0;
    }
    atomic_store(&pp->flag, 3);
    pthread_join(pp->thread, NULL);
    return bench_median(chunks, BENCH_ROUNDTRIP_CHUNKS);
}

static double roundtrip_rep(void *p) {
    roundtrip_ctx *c = p;
    return bench_time_roundtrips(c->exec, g_stream, c->iterations);
}

static void bench_roundtrips(void) {
    roundtrip_ctx c = {.iterations = bench_cfg.quick ? 200 : 2000};
    const char *bname = "one message to a spinning thread and back (ping-pong)";
    if (bench_selected("launch_wait_roundtrip")) {
        bench_row *r = bench_new_row("launch_wait_roundtrip", "us", 0);
        bench_measure(r, roundtrip_rep, pingpong_rep, &c);
        r->baseline_name = bname;
        bench_set_params(r, "\"iterations_per_rep\": %d, \"chunks\": %d", c.iterations,
                         BENCH_ROUNDTRIP_CHUNKS);
        bench_set_note(r, "launch one empty kernel, then synchronize");
        bench_finish_row(r);
    }
    if (bench_selected("graph_launch_1node")) {
        c.exec = bench_instantiate(BENCH_CHAIN, 1);
        bench_row *r = bench_new_row("graph_launch_1node", "us", 0);
        bench_measure(r, roundtrip_rep, pingpong_rep, &c);
        r->baseline_name = bname;
        r->target = 0.4;
        bench_set_params(r, "\"iterations_per_rep\": %d, \"chunks\": %d", c.iterations,
                         BENCH_ROUNDTRIP_CHUNKS);
        bench_set_note(r, "mtiart_graph_launch of a one-node graph, then synchronize");
        bench_finish_row(r);
        BENCH_CHECK(mtiart_graph_exec_destroy(c.exec));
    }
}

/* ------------------------------------------------------------------ graph replay */

typedef struct replay_ctx {
    bench_direct direct;
    mtiart_graph_exec exec;
    size_t n;
    int launches;
} replay_ctx;

/* One replay at a time: launch, wait, launch, wait, ... (latency of a replay). */
static double replay_wait_rep(void *p) {
    replay_ctx *c = p;
    return bench_time_replays(c->exec, g_stream, c->n, c->launches, 1);
}

/* Back to back: every launch queued, then one wait (throughput of replays). */
static double replay_b2b_rep(void *p) {
    replay_ctx *c = p;
    return bench_time_replays(c->exec, g_stream, c->n, c->launches, 0);
}

static void bench_replay(void) {
    static const size_t sizes[] = {10, 100, 1000, 10000};
    static const bench_shape shapes[] = {BENCH_CHAIN, BENCH_INDEPENDENT};
    for (size_t si = 0; si < 2; si++)
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
            bench_shape shape = shapes[si];
            size_t n = sizes[k];
            char wait_name[64], b2b_name[64];
            snprintf(wait_name, sizeof wait_name, "replay_%s_%zu_wait", bench_shape_name(shape), n);
            snprintf(b2b_name, sizeof b2b_name, "replay_%s_%zu_b2b", bench_shape_name(shape), n);
            int want_wait = bench_selected(wait_name), want_b2b = bench_selected(b2b_name);
            if (!want_wait && !want_b2b) continue;
            replay_ctx c = {.n = n, .launches = bench_replays_for(n)};
            c.direct = (bench_direct){bench_k_empty, NULL, n, (size_t)c.launches};
            c.exec = bench_instantiate(shape, n);
            bench_fn fns[3] = {replay_wait_rep, replay_b2b_rep, bench_direct_rep};
            bench_samples s[3];
            bench_interleave(fns, 3, &c, bench_cfg.reps, 1, s);
            for (int b2b = 0; b2b <= 1; b2b++) {
                if (!(b2b ? want_b2b : want_wait)) continue;
                bench_row *r = bench_new_row(b2b ? b2b_name : wait_name, "ns/node", 0);
                bench_row_from(r, &s[b2b], &s[2]);
                r->baseline_name = "direct loop calling the same (empty) kernel function per node";
                if (n == 1000 && shape == BENCH_CHAIN && b2b) r->ratio_target = 2;
                if (n == 1000 && shape == BENCH_INDEPENDENT && b2b) r->target = 10;
                if (n == 10 && b2b) r->target = 20;
                bench_set_params(r,
                                 "\"nodes\": %zu, \"shape\": \"%s\", \"replays_per_rep\": %d, "
                                 "\"workers\": %d",
                                 n, bench_shape_name(shape), c.launches, bench_cfg.workers);
                bench_set_note(r, b2b ? "all replays launched back to back, then one "
                                        "synchronize; per node"
                                      : "each replay launched and waited for "
                                        "(mtiart_stream_synchronize) before the next; per node");
                bench_finish_row(r);
            }
            BENCH_CHECK(mtiart_graph_exec_destroy(c.exec));
        }
}

/* ------------------------------------------------------------------ timeline trace */

typedef struct trace_ctx {
    mtiart_graph_exec exec;
    size_t n;
    int launches, batches;
} trace_ctx;

/* Chunks per rep of the trace rows: each rep's figure is its fastest chunk, the cost of
 * the work without the time slices other processes took (the two figures subtracted are
 * a few tens of nanoseconds apart, less than one lost slice spread over a chunk). */
enum { TRACE_CHUNKS = 8 };

static double replay_chunk(trace_ctx *c, int traced) {
    if (traced) BENCH_CHECK(mtiart_trace_start()); /* untimed, as the stop */
    double ns = bench_time_replays(c->exec, g_stream, c->n, c->launches, 0);
    if (traced) BENCH_CHECK(mtiart_trace_stop(NULL));
    return ns;
}

/* Eager ops including their execution (what is recorded is the run, not the enqueue). */
static double eager_chunk(trace_ctx *c, int traced) {
    if (traced) BENCH_CHECK(mtiart_trace_start());
    double t0 = bench_now_ns();
    for (int b = 0; b < c->batches; b++) {
        for (int i = 0; i < EAGER_BATCH; i++)
            BENCH_CHECK(mtiart_launch_kernel(g_stream, bench_k_empty, 1, NULL, 0));
        BENCH_CHECK(mtiart_stream_synchronize(g_stream));
    }
    double ns = (bench_now_ns() - t0) / (c->batches * (double)EAGER_BATCH);
    if (traced) BENCH_CHECK(mtiart_trace_stop(NULL));
    return ns;
}

static double fastest_chunk(trace_ctx *c, double (*chunk)(trace_ctx *, int), int traced) {
    double best = chunk(c, traced);
    for (int k = 1; k < TRACE_CHUNKS; k++) {
        double ns = chunk(c, traced);
        if (ns < best) best = ns;
    }
    return best;
}

static double traced_replay_rep(void *p) { return fastest_chunk(p, replay_chunk, 1); }
static double untraced_replay_rep(void *p) { return fastest_chunk(p, replay_chunk, 0); }
static double traced_eager_rep(void *p) { return fastest_chunk(p, eager_chunk, 1); }
static double untraced_eager_rep(void *p) { return fastest_chunk(p, eager_chunk, 0); }

/* A row whose figure is the per-rep difference traced - untraced (reps interleaved). */
static void overhead_row(const char *name, bench_fn traced, bench_fn untraced, trace_ctx *c,
                         const char *baseline, const char *note) {
    bench_fn fns[2] = {traced, untraced};
    bench_samples s[2];
    bench_interleave(fns, 2, c, bench_cfg.reps, 1, s);
    bench_samples diff = {.n = s[0].n};
    for (int i = 0; i < s[0].n; i++) diff.v[i] = s[0].v[i] - s[1].v[i];
    bench_row *r = bench_new_row(name, "ns/event", 0);
    bench_row_from(r, &diff, &s[1]);
    r->baseline_name = baseline;
    r->target = 50;
    bench_set_note(r, "%s", note);
    bench_finish_row(r);
}

static void bench_trace(void) {
    if (bench_selected("trace_replay_node_overhead")) {
        trace_ctx c = {.n = 1000, .launches = bench_cfg.quick ? 5 : 20};
        c.exec = bench_instantiate(BENCH_CHAIN, c.n);
        overhead_row("trace_replay_node_overhead", traced_replay_rep, untraced_replay_rep, &c,
                     "the same replays untraced (ns/node)",
                     "replays of a 1000-node chain of empty kernels, back to back, with a "
                     "trace recording every node, minus the same untraced; per node (each "
                     "rep: the fastest of 8 chunks of 20 replays)");
        BENCH_CHECK(mtiart_graph_exec_destroy(c.exec));
    }
    if (bench_selected("trace_eager_op_overhead")) {
        trace_ctx c = {.batches = bench_cfg.quick ? 2 : 10};
        overhead_row("trace_eager_op_overhead", traced_eager_rep, untraced_eager_rep, &c,
                     "the same ops untraced (ns/op)",
                     "empty 1-block kernels launched in batches of 1000, each batch "
                     "synchronized, with a trace recording every op, minus the same "
                     "untraced; per op (each rep: the fastest of 8 chunks of 10 batches)");
    }
}

/* ------------------------------------------------------------------ nested child graphs */

/* A chain of n = fanout^levels empty nodes built as child graphs: `levels` levels, each a
 * chain of `fanout` child nodes of the level below (the bottom level: a chain of kernels). */
static mtiart_graph nested_chain(int fanout, int levels) {
    mtiart_graph g = bench_build_graph(BENCH_CHAIN, (size_t)fanout, bench_k_empty, NULL, 0);
    for (int level = 1; level < levels; level++) {
        mtiart_graph up;
        BENCH_CHECK(mtiart_graph_create(0, &up));
        size_t prev = 0, node;
        for (int i = 0; i < fanout; i++) {
            BENCH_CHECK(
                mtiart_graph_add_child_graph_node(up, i ? &prev : NULL, i ? 1 : 0, g, &node));
            prev = node;
        }
        BENCH_CHECK(mtiart_graph_destroy(g));
        g = up;
    }
    return g;
}

typedef struct nested_ctx {
    mtiart_graph_exec flat, nested;
    size_t n;
    int launches;
} nested_ctx;

static double nested_rep(void *p) {
    nested_ctx *c = p;
    return bench_time_replays(c->nested, g_stream, c->n, c->launches, 0);
}

static double flat_rep(void *p) {
    nested_ctx *c = p;
    return bench_time_replays(c->flat, g_stream, c->n, c->launches, 0);
}

static void bench_nested(void) {
    if (!bench_selected("replay_nested_chain_1000_b2b")) return;
    nested_ctx c = {.n = 1000, .launches = bench_replays_for(1000)};
    mtiart_graph g = nested_chain(10, 3);
    size_t count = 0;
    BENCH_CHECK(mtiart_graph_instantiate(g, &c.nested));
    BENCH_CHECK(mtiart_graph_exec_get_node_count(c.nested, &count));
    if (count != c.n) bench_die("nested chain flattened to %zu nodes, not %zu", count, c.n);
    BENCH_CHECK(mtiart_graph_destroy(g));
    c.flat = bench_instantiate(BENCH_CHAIN, c.n);
    bench_row *r = bench_new_row("replay_nested_chain_1000_b2b", "ns/node", 0);
    bench_measure(r, nested_rep, flat_rep, &c);
    r->baseline_name = "the same 1000-node chain built flat (replay_chain_1000_b2b)";
    r->ratio_target = 1.05;
    bench_set_params(r,
                     "\"nodes\": %zu, \"levels\": 3, \"children_per_level\": 10, "
                     "\"replays_per_rep\": %d",
                     c.n, c.launches);
    bench_set_note(r, "a chain of 10 child graphs, each a chain of 10 child graphs of 10 empty "
                      "kernels, replayed back to back; per node");
    bench_finish_row(r);
    BENCH_CHECK(mtiart_graph_exec_destroy(c.nested));
    BENCH_CHECK(mtiart_graph_exec_destroy(c.flat));
}

/* ------------------------------------------------------------------ update in place */

static int32_t k_value(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args, (void)block, (void)num_blocks;
    return 0;
}

typedef struct update_ctx {
    mtiart_graph graphs[2];
    mtiart_graph_exec x;
    size_t n;
    int rounds, next;
    bench_samples apply;
} update_ctx;

/* Updates alternating between two graphs whose every kernel argument differs, so each
 * changes all n nodes. Each is applied by a replay (untimed here: the replay's extra cost
 * over a plain replay goes into `apply`). */
static double update_rep(void *p) {
    update_ctx *c = p;
    double spent = 0, applied = 0;
    for (int r = 0; r < c->rounds; r++) {
        double t0 = bench_now_ns();
        BENCH_CHECK(mtiart_graph_exec_update(c->x, c->graphs[c->next], NULL));
        double t1 = bench_now_ns();
        BENCH_CHECK(mtiart_graph_launch(c->x, g_stream));
        BENCH_CHECK(mtiart_stream_synchronize(g_stream));
        double t2 = bench_now_ns();
        BENCH_CHECK(mtiart_graph_launch(c->x, g_stream));
        BENCH_CHECK(mtiart_stream_synchronize(g_stream));
        double t3 = bench_now_ns();
        spent += t1 - t0;
        applied += (t2 - t1) - (t3 - t2);
        c->next ^= 1;
    }
    double denom = (double)c->rounds * (double)c->n;
    if (c->apply.n < BENCH_MAX_REPS) c->apply.v[c->apply.n++] = applied / denom;
    return spent / denom;
}

static double instantiate_rep(void *p) {
    update_ctx *c = p;
    double spent = 0;
    for (int r = 0; r < c->rounds; r++) {
        mtiart_graph_exec x;
        double t0 = bench_now_ns();
        BENCH_CHECK(mtiart_graph_instantiate(c->graphs[r & 1], &x));
        spent += bench_now_ns() - t0;
        BENCH_CHECK(mtiart_graph_exec_destroy(x));
    }
    return spent / ((double)c->rounds * (double)c->n);
}

static void bench_update(void) {
    if (!bench_selected("exec_update")) return;
    update_ctx c = {.n = 1000, .rounds = bench_cfg.quick ? 3 : 20};
    for (int i = 0; i < 2; i++) {
        int64_t value = i;
        mtiart_arg arg = {MTIART_ARG_VALUE, sizeof value, &value, 0};
        c.graphs[i] = bench_build_graph(BENCH_CHAIN, c.n, k_value, &arg, 1);
    }
    BENCH_CHECK(mtiart_graph_instantiate(c.graphs[0], &c.x));
    bench_row *r = bench_new_row("exec_update", "ns/node", 0);
    bench_measure(r, update_rep, instantiate_rep, &c);
    r->baseline_name = "mtiart_graph_instantiate of the same graph";
    r->target = 20;
    /* the first sample is the warm-up's */
    bench_set_params(r, "\"nodes\": %zu, \"updates_per_rep\": %d, \"apply_ns_per_node\": %.4g", c.n,
                     c.rounds, bench_median(c.apply.v + 1, c.apply.n - 1));
    bench_set_note(r, "mtiart_graph_exec_update of a 1000-node chain from a graph whose every "
                      "kernel argument differs; per node (params: applying it at the next "
                      "replay, per node)");
    bench_finish_row(r);
    BENCH_CHECK(mtiart_graph_exec_destroy(c.x));
    BENCH_CHECK(mtiart_graph_destroy(c.graphs[0]));
    BENCH_CHECK(mtiart_graph_destroy(c.graphs[1]));
}

/* ------------------------------------------------------------------ capture */

typedef struct capture_ctx {
    size_t n;
    int rounds;
    bench_samples capture_part, inst_part;
} capture_ctx;

static double capture_rep(void *p) {
    capture_ctx *c = p;
    double capture_part,
        total = bench_time_chain_build(g_stream, c->n, c->rounds, 1, &capture_part);
    if (c->capture_part.n < BENCH_MAX_REPS) {
        c->capture_part.v[c->capture_part.n++] = capture_part;
        c->inst_part.v[c->inst_part.n++] = total - capture_part;
    }
    return total;
}

static double build_rep(void *p) {
    capture_ctx *c = p;
    return bench_time_chain_build(g_stream, c->n, c->rounds, 0, NULL);
}

static void bench_capture(void) {
    if (!bench_selected("capture_instantiate")) return;
    capture_ctx c = {.n = 1000, .rounds = bench_cfg.quick ? 3 : 20};
    bench_row *r = bench_new_row("capture_instantiate", "ns/node", 0);
    bench_measure(r, capture_rep, build_rep, &c);
    r->baseline_name = "explicit build of the same chain (graph_create + add_kernel_node + "
                       "instantiate)";
    r->target = 30;
    /* the first part is the warm-up's */
    bench_set_params(r,
                     "\"nodes\": %zu, \"capture_ns_per_node\": %.4g, "
                     "\"instantiate_ns_per_node\": %.4g",
                     c.n, bench_median(c.capture_part.v + 1, c.capture_part.n - 1),
                     bench_median(c.inst_part.v + 1, c.inst_part.n - 1));
    bench_set_note(r, "begin capture, 1000 empty launches, end capture, instantiate; per node");
    bench_finish_row(r);
}

/* ------------------------------------------------------------------ saved graphs */

typedef struct load_ctx {
    size_t n;
    int rounds;
    float *x;
    char path[PATH_MAX];
    bench_samples bind;
} load_ctx;

enum { LOAD_ELEMS = 64 };

static mtiart_tensor_desc load_vec(float *data) {
    mtiart_tensor_desc t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = MTIART_DTYPE_FLOAT32;
    t.ndim = 1;
    t.shape[0] = LOAD_ELEMS;
    return t;
}

/* n kernel-library launches: x + 1 into scratch memory of the capture's pool, then + 1 in
 * place, n - 1 times (a graph a file can hold: built-in kernels, one input binding). */
static mtiart_graph capture_ops(const load_ctx *c) {
    mtiart_graph g;
    float *t;
    BENCH_CHECK(
        mtiart_stream_begin_capture(g_stream, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    BENCH_CHECK(mtiart_malloc_async(g_stream, LOAD_ELEMS * sizeof(float), (void **)&t));
    mtiart_tensor_desc x = load_vec(c->x), tt = load_vec(t);
    BENCH_CHECK(mtiart_op_binary_scalar(g_stream, MTIART_BINARY_ADD, &tt, &x, 1.0, 0, 0));
    for (size_t i = 1; i < c->n; i++)
        BENCH_CHECK(mtiart_op_binary_scalar(g_stream, MTIART_BINARY_ADD, &tt, &tt, 1.0, 0, 0));
    BENCH_CHECK(mtiart_free(t));
    BENCH_CHECK(mtiart_stream_end_capture(g_stream, &g));
    return g;
}

static double capture_ops_rep(void *p) {
    load_ctx *c = p;
    double spent = 0;
    for (int r = 0; r < c->rounds; r++) {
        mtiart_graph_exec x;
        double t0 = bench_now_ns();
        mtiart_graph g = capture_ops(c);
        BENCH_CHECK(mtiart_graph_instantiate(g, &x));
        spent += bench_now_ns() - t0;
        BENCH_CHECK(mtiart_graph_exec_destroy(x));
        BENCH_CHECK(mtiart_graph_destroy(g));
    }
    BENCH_CHECK(mtiart_empty_cache(0)); /* the private pools of the captures */
    return spent / ((double)c->rounds * (double)c->n);
}

static double load_rep(void *p) {
    load_ctx *c = p;
    double spent = 0, bound = 0;
    for (int r = 0; r < c->rounds; r++) {
        mtiart_graph g;
        mtiart_graph_exec x;
        double t0 = bench_now_ns();
        BENCH_CHECK(mtiart_graph_load(c->path, 0, NULL, &g));
        BENCH_CHECK(mtiart_graph_instantiate(g, &x));
        double t1 = bench_now_ns();
        BENCH_CHECK(mtiart_graph_exec_bind(x, "x", c->x, LOAD_ELEMS * sizeof(float)));
        bound += bench_now_ns() - t1;
        spent += t1 - t0;
        BENCH_CHECK(mtiart_graph_exec_destroy(x));
        BENCH_CHECK(mtiart_graph_destroy(g));
    }
    BENCH_CHECK(mtiart_empty_cache(0));
    double denom = (double)c->rounds * (double)c->n;
    if (c->bind.n < BENCH_MAX_REPS) c->bind.v[c->bind.n++] = bound / denom;
    return spent / denom;
}

static void bench_load(void) {
    if (!bench_selected("load_instantiate")) return;
    load_ctx c = {.n = 10000, .rounds = bench_cfg.quick ? 1 : 3};
    BENCH_CHECK(mtiart_malloc(0, LOAD_ELEMS * sizeof(float), (void **)&c.x));
    const char *tmp = getenv("TMPDIR");
    snprintf(c.path, sizeof c.path, "%s/bench_load.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    int fd = mkstemp(c.path);
    if (fd < 0) bench_die("mkstemp %s failed", c.path);
    close(fd);
    mtiart_graph g = capture_ops(&c);
    mtiart_graph_binding x = {"x", c.x, LOAD_ELEMS * sizeof(float), MTIART_BINDING_INPUT, 0};
    BENCH_CHECK(mtiart_graph_save(g, c.path, &x, 1));
    BENCH_CHECK(mtiart_graph_destroy(g));
    bench_row *r = bench_new_row("load_instantiate", "ns/node", 0);
    bench_measure(r, load_rep, capture_ops_rep, &c);
    r->baseline_name = "capture of the same 10000 kernel-library launches + instantiate";
    r->ratio_target = 2;
    /* the first sample is the warm-up's */
    bench_set_params(r, "\"nodes\": %zu, \"bind_ns_per_node\": %.4g", c.n,
                     bench_median(c.bind.v + 1, c.bind.n - 1));
    bench_set_note(r, "mtiart_graph_load of a saved 10000-node graph + instantiate, per node "
                      "(params: binding its input afterwards, per node)");
    bench_finish_row(r);
    unlink(c.path);
    BENCH_CHECK(mtiart_free(c.x));
}

/* ------------------------------------------------------------------ race check */

typedef struct race_ctx {
    mtiart_graph g;
    size_t n;
    int rounds;
} race_ctx;

static double race_rep(void *p) {
    race_ctx *c = p;
    double t0 = bench_now_ns();
    for (int r = 0; r < c->rounds; r++) {
        size_t count;
        BENCH_CHECK(mtiart_graph_check_races(c->g, NULL, 0, &count));
        if (count) bench_die("the race-check graph has %zu races", count);
    }
    return (bench_now_ns() - t0) / ((double)c->rounds * (double)c->n);
}

static double race_instantiate_rep(void *p) {
    race_ctx *c = p;
    double spent = 0;
    for (int r = 0; r < c->rounds; r++) {
        mtiart_graph_exec x;
        double t0 = bench_now_ns();
        BENCH_CHECK(mtiart_graph_instantiate(c->g, &x));
        spent += bench_now_ns() - t0;
        BENCH_CHECK(mtiart_graph_exec_destroy(x));
    }
    return spent / ((double)c->rounds * (double)c->n);
}

/* What a captured training step looks like: four streams, each updating its own buffer in
 * place while reading a shared weight, joined every 100 nodes. */
static mtiart_graph race_graph(size_t n, void *weights, void *const *state) {
    mtiart_graph g;
    BENCH_CHECK(mtiart_graph_create(0, &g));
    enum { STREAMS = 4, JOIN_EVERY = 100 };
    size_t last[STREAMS], node = 0;
    for (size_t i = 0; i < n; i++) {
        size_t lane = i % STREAMS;
        mtiart_arg args[2] = {{MTIART_ARG_BUFFER_IN, 0, weights, 4096},
                              {MTIART_ARG_BUFFER_INOUT, 0, state[lane], 4096}};
        size_t deps[STREAMS], nd = 0;
        if (i % JOIN_EVERY < STREAMS && i >= JOIN_EVERY)
            for (size_t k = 0; k < STREAMS; k++) deps[nd++] = last[k]; /* a join */
        else if (i >= STREAMS) deps[nd++] = last[lane];
        BENCH_CHECK(mtiart_graph_add_kernel_node(g, nd ? deps : NULL, nd, bench_k_empty, 1, args, 2,
                                                 &node));
        last[lane] = node;
    }
    return g;
}

static void bench_race_check(void) {
    if (!bench_selected("race_check_10000")) return;
    void *weights, *state[4];
    BENCH_CHECK(mtiart_malloc(0, 4096, &weights));
    for (int i = 0; i < 4; i++) BENCH_CHECK(mtiart_malloc(0, 4096, &state[i]));
    race_ctx c = {.n = 10000, .rounds = bench_cfg.quick ? 1 : 5};
    c.g = race_graph(c.n, weights, state);
    bench_row *r = bench_new_row("race_check_10000", "ns/node", 0);
    bench_measure(r, race_rep, race_instantiate_rep, &c);
    r->baseline_name = "mtiart_graph_instantiate of the same graph";
    bench_set_params(r, "\"nodes\": %zu, \"buffers_per_node\": 2, \"streams\": 4", c.n);
    bench_set_note(r, "mtiart_graph_check_races of a 10,000-node graph: four in-place chains "
                      "reading one shared weight, joined every 100 nodes; per node");
    bench_finish_row(r);
    BENCH_CHECK(mtiart_graph_destroy(c.g));
    BENCH_CHECK(mtiart_free(weights));
    for (int i = 0; i < 4; i++) BENCH_CHECK(mtiart_free(state[i]));
}

/* ------------------------------------------------------------------ graph memory */

enum { MEM_NODES = 1000 };

/* A capture records (and holds) the allocation behind every buffer a node names. */
typedef struct capture_buffer_ctx {
    int rounds;
    void *one;             /* every node on this allocation (one hold for the capture) */
    void *many[MEM_NODES]; /* node i on allocation i (one hold each) */
} capture_buffer_ctx;

static double capture_launches(capture_buffer_ctx *c, int args, int distinct) {
    double total = 0;
    for (int r = 0; r < c->rounds; r++) {
        mtiart_graph g;
        double t0 = bench_now_ns();
        BENCH_CHECK(
            mtiart_stream_begin_capture(g_stream, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0}));
        for (int i = 0; i < MEM_NODES; i++) {
            mtiart_arg a = {MTIART_ARG_BUFFER_INOUT, 0, distinct ? c->many[i] : c->one, 64};
            BENCH_CHECK(
                mtiart_launch_kernel(g_stream, bench_k_empty, 1, args ? &a : NULL, (uint32_t)args));
        }
        BENCH_CHECK(mtiart_stream_end_capture(g_stream, &g));
        total += bench_now_ns() - t0;
        BENCH_CHECK(mtiart_graph_destroy(g));
    }
    BENCH_CHECK(mtiart_empty_cache(0)); /* the private pools of the captures */
    return total / ((double)c->rounds * MEM_NODES);
}

static double capture_same_buffer_rep(void *p) { return capture_launches(p, 1, 0); }
static double capture_distinct_buffers_rep(void *p) { return capture_launches(p, 1, 1); }
static double capture_no_buffer_rep(void *p) { return capture_launches(p, 0, 0); }

static void bench_capture_buffers(void) {
    if (!bench_selected("capture_buffer")) return;
    capture_buffer_ctx c = {.rounds = bench_cfg.quick ? 3 : 20};
    BENCH_CHECK(mtiart_malloc(0, 64, &c.one));
    for (int i = 0; i < MEM_NODES; i++) BENCH_CHECK(mtiart_malloc(0, 64, &c.many[i]));
    bench_fn fns[3] = {capture_same_buffer_rep, capture_distinct_buffers_rep,
                       capture_no_buffer_rep};
    bench_samples s[3];
    bench_interleave(fns, 3, &c, bench_cfg.reps, 1, s);
    bench_row *r = bench_new_row("capture_buffer", "ns/node", 0);
    bench_row_from(r, &s[0], &s[2]);
    r->baseline_name = "the same capture of launches without arguments";
    double tmp[BENCH_MAX_REPS];
    memcpy(tmp, s[1].v, sizeof(double) * (size_t)s[1].n);
    bench_set_params(r, "\"nodes\": %d, \"distinct_buffers_ns_per_node\": %.4g", MEM_NODES,
                     bench_median(tmp, s[1].n));
    bench_set_note(r, "begin capture, 1000 launches of an empty kernel with one buffer "
                      "argument on the same allocation, end capture; per node "
                      "(params: one allocation per node)");
    bench_finish_row(r);
    BENCH_CHECK(mtiart_free(c.one));
    for (int i = 0; i < MEM_NODES; i++) BENCH_CHECK(mtiart_free(c.many[i]));
}

/* The launch's input check: one load per input allocation. */
typedef struct input_check_ctx {
    mtiart_graph_exec checked, plain;
    int launches;
} input_check_ctx;

static double time_launches(mtiart_graph_exec x, int launches) {
    double total = 0;
    for (int i = 0; i < launches; i++) {
        double t0 = bench_now_ns();
        BENCH_CHECK(mtiart_graph_launch(x, g_stream));
        total += bench_now_ns() - t0;
        BENCH_CHECK(mtiart_stream_synchronize(g_stream));
    }
    return total / launches;
}

static double checked_launch_rep(void *p) {
    input_check_ctx *c = p;
    return time_launches(c->checked, c->launches);
}

static double plain_launch_rep(void *p) {
    input_check_ctx *c = p;
    return time_launches(c->plain, c->launches);
}

static void bench_input_check(void) {
    if (!bench_selected("launch_input_check")) return;
    void *bufs[MEM_NODES];
    mtiart_graph g;
    BENCH_CHECK(mtiart_graph_create(0, &g));
    size_t node = 0;
    for (int i = 0; i < MEM_NODES; i++) {
        BENCH_CHECK(mtiart_malloc(0, 64, &bufs[i]));
        mtiart_arg a = {MTIART_ARG_BUFFER_IN, 0, bufs[i], 64};
        BENCH_CHECK(mtiart_graph_add_kernel_node(g, i ? &node : NULL, i ? 1 : 0, bench_k_empty, 1,
                                                 &a, 1, &node));
    }
    input_check_ctx c = {.launches = bench_cfg.quick ? 20 : 200};
    BENCH_CHECK(mtiart_graph_instantiate_with_flags(
        g, MTIART_GRAPH_INSTANTIATE_CHECK_INPUT_LIVENESS, &c.checked));
    BENCH_CHECK(mtiart_graph_instantiate(g, &c.plain));
    bench_fn fns[2] = {checked_launch_rep, plain_launch_rep};
    bench_samples s[2];
    bench_interleave(fns, 2, &c, bench_cfg.reps, 1, s);
    /* Per rep: what the check adds, and the launch without it, per input. */
    bench_samples added = {.n = s[0].n}, plain = {.n = s[1].n};
    for (int i = 0; i < s[0].n; i++) {
        added.v[i] = (s[0].v[i] - s[1].v[i]) / MEM_NODES;
        plain.v[i] = s[1].v[i] / MEM_NODES;
    }
    bench_row *r = bench_new_row("launch_input_check", "ns/buffer", 0);
    bench_row_from(r, &added, &plain);
    r->baseline_name = "the unchecked launch of the same graph, spread over its inputs";
    r->target = 2;
    bench_set_params(r, "\"inputs\": %d, \"launches_per_rep\": %d", MEM_NODES, c.launches);
    bench_set_note(r, "mtiart_graph_launch (enqueue only, each followed by an untimed "
                      "synchronize) of a 1000-node chain reading 1000 allocations, instantiated "
                      "with CHECK_INPUT_LIVENESS minus without; per input");
    bench_finish_row(r);
    BENCH_CHECK(mtiart_graph_exec_destroy(c.checked));
    BENCH_CHECK(mtiart_graph_exec_destroy(c.plain));
    BENCH_CHECK(mtiart_graph_destroy(g));
    for (int i = 0; i < MEM_NODES; i++) BENCH_CHECK(mtiart_free(bufs[i]));
}

/* ------------------------------------------------------------------ allocator */

typedef struct alloc_ctx {
    int pairs;
    size_t size;
} alloc_ctx;

static double alloc_rep(void *p) {
    alloc_ctx *c = p;
    double t0 = bench_now_ns();
    for (int i = 0; i < c->pairs; i++) {
        void *ptr;
        BENCH_CHECK(mtiart_malloc_async(g_stream, c->size, &ptr));
        BENCH_CHECK(mtiart_free(ptr));
    }
    return (bench_now_ns() - t0) / c->pairs;
}

static double libc_alloc_rep(void *p) {
    alloc_ctx *c = p;
    double t0 = bench_now_ns();
    for (int i = 0; i < c->pairs; i++) {
        void *ptr = malloc(c->size);
        BENCH_OPAQUE(ptr);
        free(ptr);
    }
    return (bench_now_ns() - t0) / c->pairs;
}

static void bench_alloc(void) {
    if (!bench_selected("alloc_free_pair")) return;
    alloc_ctx c = {.pairs = bench_cfg.quick ? 20000 : 200000, .size = 1024};
    bench_row *r = bench_new_row("alloc_free_pair", "ns", 0);
    bench_measure(r, alloc_rep, libc_alloc_rep, &c);
    r->baseline_name = "libc malloc + free of the same size";
    r->target = 25;
    bench_set_params(r, "\"bytes\": %zu, \"pairs_per_rep\": %d", c.size, c.pairs);
    bench_set_note(r, "mtiart_malloc_async + mtiart_free on one stream");
    bench_finish_row(r);
}

/* ------------------------------------------------------------------ elementwise */

typedef mtiart_status (*op_binary_fn)(mtiart_stream, mtiart_binary_op, const mtiart_tensor_desc *,
                                      const mtiart_tensor_desc *, const mtiart_tensor_desc *);

typedef struct copy_part {
    char *dst;
    const char *src;
    size_t bytes;
} copy_part;

typedef struct ew_ctx {
    op_binary_fn op;
    mtiart_tensor_desc out, a, b;
    size_t bytes; /* of one operand */
    char *src, *dst;
    int times, threads;
} ew_ctx;

static double ew_rep(void *p) {
    ew_ctx *c = p;
    double t0 = bench_now_ns();
    for (int i = 0; i < c->times; i++)
        BENCH_CHECK(c->op(g_stream, MTIART_BINARY_ADD, &c->out, &c->a, &c->b));
    BENCH_CHECK(mtiart_stream_synchronize(g_stream));
    double t = (bench_now_ns() - t0) / c->times;
    return 3.0 * (double)c->bytes / t; /* bytes per ns = GB/s: read a, b; write out */
}

static double memcpy_1t_rep(void *p) {
    ew_ctx *c = p;
    double t0 = bench_now_ns();
    for (int i = 0; i < c->times; i++) {
        memcpy(c->dst, c->src, c->bytes);
        BENCH_CLOBBER();
    }
    double t = (bench_now_ns() - t0) / c->times;
    return 2.0 * (double)c->bytes / t; /* read src, write dst */
}

static void *copy_main(void *p) {
    copy_part *part = p;
    memcpy(part->dst, part->src, part->bytes);
    BENCH_CLOBBER();
    return NULL;
}

/* `threads` threads each copying 1/threads of the bytes (this thread copies one part);
 * thread start-up is inside the timing, as a worker wake-up is inside the runtime's. */
static double memcpy_mt_rep(void *p) {
    ew_ctx *c = p;
    pthread_t th[64];
    copy_part parts[64];
    size_t chunk = (c->bytes / (size_t)c->threads + 63) & ~(size_t)63;
    double t0 = bench_now_ns();
    for (int i = 0; i < c->times; i++) {
        for (int t = 0; t < c->threads; t++) {
            size_t lo = (size_t)t * chunk, hi = lo + chunk > c->bytes ? c->bytes : lo + chunk;
            parts[t] = (copy_part){c->dst + lo, c->src + lo, hi > lo ? hi - lo : 0};
            if (t > 0) pthread_create(&th[t], NULL, copy_main, &parts[t]);
        }
        copy_main(&parts[0]);
        for (int t = 1; t < c->threads; t++) pthread_join(th[t], NULL);
    }
    double t = (bench_now_ns() - t0) / c->times;
    return 2.0 * (double)c->bytes / t;
}

static void bench_elementwise(void) {
    int want_1t = bench_selected("elementwise_add_f32_vs_memcpy_1t");
    int want_mt = bench_selected("elementwise_add_f32_vs_memcpy_mt");
    if (!want_1t && !want_mt) return;
    const size_t n = 16u << 20;
    ew_ctx c = {.bytes = n * sizeof(float),
                .times = bench_cfg.quick ? 1 : 4,
                .threads = bench_cfg.workers > 64 ? 64 : bench_cfg.workers};
    *(void **)&c.op = dlsym(RTLD_DEFAULT, "mtiart_op_binary");
    void *a = NULL, *b = NULL, *out = NULL;
    bench_samples s[3];
    if (c.op) {
        BENCH_CHECK(mtiart_malloc(0, c.bytes, &a));
        BENCH_CHECK(mtiart_malloc(0, c.bytes, &b));
        BENCH_CHECK(mtiart_malloc(0, c.bytes, &out));
        BENCH_CHECK(mtiart_memset_async(g_stream, a, 0, c.bytes));
        BENCH_CHECK(mtiart_memset_async(g_stream, b, 0, c.bytes));
        BENCH_CHECK(mtiart_memset_async(g_stream, out, 0, c.bytes));
        BENCH_CHECK(mtiart_stream_synchronize(g_stream));
        mtiart_tensor_desc d = {.dtype = MTIART_DTYPE_FLOAT32, .ndim = 1, .shape = {(int64_t)n}};
        c.out = c.a = c.b = d;
        c.out.data = out;
        c.a.data = a;
        c.b.data = b;
        c.src = malloc(c.bytes);
        c.dst = malloc(c.bytes);
        if (!c.src || !c.dst) bench_die("out of memory");
        memset(c.src, 1, c.bytes);
        memset(c.dst, 0, c.bytes);
        bench_fn fns[3] = {ew_rep, memcpy_1t_rep, memcpy_mt_rep};
        bench_interleave(fns, 3, &c, bench_cfg.reps, 1, s);
    }
    for (int mt = 0; mt <= 1; mt++) {
        if (!(mt ? want_mt : want_1t)) continue;
        bench_row *r = bench_new_row(mt ? "elementwise_add_f32_vs_memcpy_mt"
                                        : "elementwise_add_f32_vs_memcpy_1t",
                                     "GB/s", 1);
        r->baseline_name = mt ? "memcpy of the same bytes split over as many threads as the "
                                "runtime has workers, read + write traffic"
                              : "memcpy of the same bytes on one thread, read + write traffic";
        if (mt) r->ratio_target = 0.8;
        bench_set_params(r,
                         "\"elements\": %zu, \"dtype\": \"float32\", \"traffic\": \"3 x %zu "
                         "bytes\", \"runtime_workers\": %d, \"memcpy_threads\": %d",
                         n, n * 4, bench_cfg.workers, mt ? c.threads : 1);
        bench_set_note(r,
                       "mtiart_op_binary ADD out = a + b on all %d workers, then synchronize; "
                       "against memcpy on %d thread%s",
                       bench_cfg.workers, mt ? c.threads : 1, mt && c.threads > 1 ? "s" : "");
        if (!c.op) bench_set_skipped(r, "mtiart_op_binary is not in this libmtiart");
        else bench_row_from(r, &s[0], &s[1 + mt]);
        bench_finish_row(r);
    }
    if (!c.op) return;
    free(c.src);
    free(c.dst);
    BENCH_CHECK(mtiart_free(a));
    BENCH_CHECK(mtiart_free(b));
    BENCH_CHECK(mtiart_free(out));
    BENCH_CHECK(mtiart_stream_synchronize(g_stream));
    BENCH_CHECK(mtiart_empty_cache(0));
}

/* ------------------------------------------------------------------ CPU cost of waiting */

/* CPU time consumed so far: CLOCK_THREAD_CPUTIME_ID (this thread) or
 * CLOCK_PROCESS_CPUTIME_ID (every thread); the scheduler's exact run time, where getrusage
 * rounds to ticks and splits user/system by sampling. */
static double cpu_seconds(clockid_t which) {
    struct timespec ts;
    clock_gettime(which, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int32_t sleep_host_fn(void *user_data) {
    double seconds = *(const double *)user_data;
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {}
    return 0;
}

typedef struct cpu_ctx {
    double seconds; /* of waiting per rep */
    bench_samples host, workers, idle;
} cpu_ctx;

/* CPU seconds per wall second: the host thread blocked in mtiart_stream_synchronize on a
 * host function that sleeps (so it burns nothing itself), the workers meanwhile, and then
 * the process doing nothing at all for as long. */
static double cpu_wait_rep(void *p) {
    cpu_ctx *c = p;
    BENCH_CHECK(mtiart_stream_synchronize(g_stream));
    double t0 = bench_now_ns(), host0 = cpu_seconds(CLOCK_THREAD_CPUTIME_ID),
           all0 = cpu_seconds(CLOCK_PROCESS_CPUTIME_ID);
    BENCH_CHECK(mtiart_launch_host_func(g_stream, sleep_host_fn, &c->seconds));
    BENCH_CHECK(mtiart_stream_synchronize(g_stream));
    double wall = (bench_now_ns() - t0) * 1e-9;
    double host = cpu_seconds(CLOCK_THREAD_CPUTIME_ID) - host0,
           all = cpu_seconds(CLOCK_PROCESS_CPUTIME_ID) - all0;
    if (c->host.n < BENCH_MAX_REPS) {
        c->host.v[c->host.n++] = host / wall;
        c->workers.v[c->workers.n++] = (all - host) / wall;
    }
    t0 = bench_now_ns();
    all0 = cpu_seconds(CLOCK_PROCESS_CPUTIME_ID);
    usleep((useconds_t)(c->seconds * 1e6));
    wall = (bench_now_ns() - t0) * 1e-9;
    if (c->idle.n < BENCH_MAX_REPS)
        c->idle.v[c->idle.n++] = (cpu_seconds(CLOCK_PROCESS_CPUTIME_ID) - all0) / wall;
    return 0;
}

/* Baseline: this thread spinning on the clock for as long (one busy core, about 1.0). */
static double cpu_spin_rep(void *p) {
    cpu_ctx *c = p;
    double t0 = bench_now_ns(), cpu0 = cpu_seconds(CLOCK_THREAD_CPUTIME_ID);
    while (bench_now_ns() - t0 < c->seconds * 1e9) {}
    return (cpu_seconds(CLOCK_THREAD_CPUTIME_ID) - cpu0) / ((bench_now_ns() - t0) * 1e-9);
}

static void bench_cpu_wait(void) {
    static const char *const names[3] = {"cpu_wait_host_thread", "cpu_wait_workers",
                                         "cpu_idle_process"};
    int want[3], any = 0;
    for (int i = 0; i < 3; i++) any |= want[i] = bench_selected(names[i]);
    if (!any) return;
    cpu_ctx c = {.seconds = bench_cfg.quick ? 0.02 : 0.1};
    bench_fn fns[2] = {cpu_wait_rep, cpu_spin_rep};
    bench_samples s[2];
    int reps = bench_cfg.reps > 5 ? 5 : bench_cfg.reps;
    bench_interleave(fns, 2, &c, reps, 1, s);
    bench_samples *figures[3] = {&c.host, &c.workers, &c.idle};
    static const char *const notes[3] = {
        "CPU time of the host thread blocked in mtiart_stream_synchronize on a host function "
        "that sleeps, per second of waiting",
        "CPU time of every other thread of the process (the runtime's workers; the one "
        "running the host function sleeps) during that wait, per second of waiting",
        "CPU time of the whole process while it does nothing (nothing queued, the host thread "
        "asleep), measured from the end of the last synchronize, per second"};
    for (int i = 0; i < 3; i++) {
        if (!want[i]) continue;
        /* drop the warm-up's sample */
        bench_samples f = {.n = figures[i]->n - 1};
        memcpy(f.v, figures[i]->v + 1, sizeof(double) * (size_t)f.n);
        bench_row *r = bench_new_row(names[i], "cpu_s/s", 0);
        bench_row_from(r, &f, &s[1]);
        r->baseline_name = "a thread spinning on the clock for as long (one busy core)";
        bench_set_params(r, "\"seconds_per_rep\": %.3g, \"workers\": %d", c.seconds,
                         bench_cfg.workers);
        bench_set_note(r, "%s (clock_gettime CPU-time clocks)", notes[i]);
        bench_finish_row(r);
    }
}

/* ------------------------------------------------------------------ worker scaling */

static volatile uint64_t spin_sink[64];

/* ~`iterations` dependent multiply-adds: a compute-bound node. */
__attribute__((noinline)) static uint64_t spin_work(uint64_t iterations, uint64_t seed) {
    uint64_t x = seed | 1;
    for (uint64_t i = 0; i < iterations; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        BENCH_OPAQUE(x);
    }
    return x;
}

static int32_t k_spin(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)num_blocks;
    uint64_t iterations;
    memcpy(&iterations, args[0], sizeof iterations);
    spin_sink[block & 63] = spin_work(iterations, block + 1);
    return 0;
}

/* The scaling workloads: `nodes` compute nodes of `iterations` each. */
typedef enum scaling_kind { SCALE_INDEPENDENT, SCALE_FANOUT, SCALE_EAGER_BLOCKS } scaling_kind;

static const struct {
    const char *prefix, *arg, *note;
} scaling_kinds[3] = {
    {"scaling_workers", "independent", "graph of independent compute nodes, replays back to back"},
    {"scaling_fanout", "fanout",
     "graph of one compute node followed by the other compute nodes depending on it, replays "
     "back to back"},
    {"scaling_eager_blocks", "eager_blocks",
     "one eager multi-block compute kernel (a block per node), synchronized after each launch"},
};

/* Child mode: time `replays` runs of the workload after a warm-up one, with the
 * MTIART_NUM_WORKERS the parent chose; prints ns per run. */
static int scaling_child(const char *kind, uint64_t iterations, int nodes, int replays) {
    mtiart_stream s;
    BENCH_CHECK(mtiart_stream_create(0, 0, &s));
    mtiart_arg arg = {.kind = MTIART_ARG_VALUE, .size = sizeof iterations, .value = &iterations};
    double t = 0;
    if (!strcmp(kind, "eager_blocks")) {
        for (int r = -1; r < replays; r++) {
            double t0 = bench_now_ns();
            BENCH_CHECK(mtiart_launch_kernel(s, k_spin, (uint32_t)nodes, &arg, 1));
            BENCH_CHECK(mtiart_stream_synchronize(s));
            if (r >= 0) t += bench_now_ns() - t0;
        }
    } else {
        bench_shape shape = !strcmp(kind, "fanout") ? BENCH_FANOUT : BENCH_INDEPENDENT;
        mtiart_graph g = bench_build_graph(shape, (size_t)nodes, k_spin, &arg, 1);
        mtiart_graph_exec x;
        BENCH_CHECK(mtiart_graph_instantiate(g, &x));
        BENCH_CHECK(mtiart_graph_destroy(g));
        BENCH_CHECK(mtiart_graph_launch(x, s)); /* warm-up */
        BENCH_CHECK(mtiart_stream_synchronize(s));
        double t0 = bench_now_ns();
        for (int i = 0; i < replays; i++) BENCH_CHECK(mtiart_graph_launch(x, s));
        BENCH_CHECK(mtiart_stream_synchronize(s));
        t = bench_now_ns() - t0;
        BENCH_CHECK(mtiart_graph_exec_destroy(x));
    }
    printf("%.1f\n", t / replays);
    BENCH_CHECK(mtiart_stream_destroy(s));
    return 0;
}

static double run_scaling_child(const char *self, int workers, const char *kind,
                                uint64_t iterations, int nodes, int replays) {
    char a_iter[32], a_nodes[32], a_replays[32], env_workers[48], out[128];
    snprintf(a_iter, sizeof a_iter, "%llu", (unsigned long long)iterations);
    snprintf(a_nodes, sizeof a_nodes, "%d", nodes);
    snprintf(a_replays, sizeof a_replays, "%d", replays);
    snprintf(env_workers, sizeof env_workers, "MTIART_NUM_WORKERS=%d", workers);
    char *argv[] = {(char *)self, "--scaling-child", (char *)kind, a_iter,
                    a_nodes,      a_replays,         NULL};
    if (bench_run_child(argv, env_workers, out, sizeof out) != 0) return NAN;
    return strtod(out, NULL);
}

/* Calibrate one node to about 50 us of arithmetic on this machine. */
static uint64_t calibrate_50us(void) {
    uint64_t iterations = 1u << 16;
    for (;;) {
        double t0 = bench_now_ns();
        spin_sink[0] = spin_work(iterations, 7);
        double t = bench_now_ns() - t0;
        if (t > 2e5 || iterations > (1ull << 40)) return (uint64_t)((double)iterations * 50e3 / t);
        iterations *= 2;
    }
}

/* Every worker count in every round, the counts in a rotating order, each in its own child
 * process; a count's speedup in a round is the 1-worker time of that round over its own. */
static void bench_scaling(const int *counts, int ncounts) {
    enum { MAX_COUNTS = 16 };
    char name[64];
    int want[3][MAX_COUNTS], any = 0;
    if (ncounts > MAX_COUNTS) ncounts = MAX_COUNTS;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < ncounts; i++) {
            snprintf(name, sizeof name, "%s_%d", scaling_kinds[k].prefix, counts[i]);
            any |= want[k][i] = bench_selected(name);
        }
    if (!any) return;
    char self[4096];
    if (bench_self_path(self, sizeof self) != 0) bench_die("cannot find this program's path");
    int max_workers = 1;
    for (int i = 0; i < ncounts; i++)
        if (counts[i] > max_workers) max_workers = counts[i];
    uint64_t iterations = calibrate_50us();
    const int nodes = 8 * max_workers;
    /* about 50 ms of work per 1-worker child (15 ms quick), at least 3 runs */
    int replays = (int)((bench_cfg.quick ? 15000.0 : 50000.0) / (nodes * 50.0) + 0.5);
    if (replays < 3) replays = 3;
    const int rounds = bench_cfg.reps;
    static double t[3][MAX_COUNTS][BENCH_MAX_REPS];
    for (int r = 0; r < rounds; r++)
        for (int j = 0; j < ncounts; j++) {
            int i = (r + j) % ncounts;
            for (int k = 0; k < 3; k++) {
                int needed = want[k][i];
                for (int m = 0; m < ncounts && !needed; m++) needed = counts[i] == 1 && want[k][m];
                t[k][i][r] = needed ? run_scaling_child(self, counts[i], scaling_kinds[k].arg,
                                                        iterations, nodes, replays)
                                    : NAN;
            }
        }
    int one = -1;
    for (int i = 0; i < ncounts; i++)
        if (counts[i] == 1) one = i;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < ncounts; i++) {
            if (!want[k][i]) continue;
            snprintf(name, sizeof name, "%s_%d", scaling_kinds[k].prefix, counts[i]);
            bench_row *row = bench_new_row(name, "x", 1);
            row->baseline = 1.0;
            row->baseline_unit = "x";
            row->baseline_name = "the same workload with MTIART_NUM_WORKERS=1 in the same round";
            /* The most this many workers can gain on the shape: a fan-out's root runs alone. */
            int w = counts[i], fanout = k == SCALE_FANOUT;
            int rounds_of_nodes = fanout ? 1 + (nodes - 1 + w - 1) / w : (nodes + w - 1) / w;
            double ideal = (double)nodes / rounds_of_nodes;
            /* 1.97x of the 2x bound (what the peers reach on independent work), on any shape */
            if (counts[i] == 2) row->target = 1.97 / 2 * ideal;
            int oversubscribed = counts[i] > bench_cfg.ncpu;
            bench_samples speedup = {0}, us = {0}, us1 = {0};
            for (int r = 0; r < rounds; r++) {
                double tw = t[k][i][r], t1 = one >= 0 ? t[k][one][r] : NAN;
                if (isnan(tw) || isnan(t1)) continue;
                speedup.v[speedup.n++] = t1 / tw;
                us.v[us.n++] = tw / 1000.0;
                us1.v[us1.n++] = t1 / 1000.0;
            }
            bench_set_note(row,
                           "%s; %d nodes of ~50 us; speedup over 1 worker, median of %d "
                           "interleaved rounds%s",
                           scaling_kinds[k].note, nodes, rounds,
                           oversubscribed ? "; OVERSUBSCRIBED: more workers than CPUs" : "");
            if (speedup.n == 0) {
                bench_set_skipped(row, one < 0 ? "no 1-worker run to compare with"
                                               : "a child process failed");
                bench_finish_row(row);
                continue;
            }
            bench_row_from(row, &speedup, NULL);
            double sp[BENCH_MAX_REPS];
            memcpy(sp, speedup.v, sizeof(double) * (size_t)speedup.n);
            double q1 = bench_quantile(sp, speedup.n, 0.25),
                   q3 = bench_quantile(sp, speedup.n, 0.75);
            bench_set_params(row,
                             "\"workers\": %d, \"ncpu\": %d, \"oversubscribed\": %s, "
                             "\"nodes\": %d, \"node_us\": 50, \"runs_per_round\": %d, "
                             "\"speedup_q1\": %.4g, \"speedup_q3\": %.4g, "
                             "\"us_per_run\": %.4g, \"us_per_run_1_worker\": %.4g, "
                             "\"efficiency\": %.3g, \"ideal_speedup\": %.4g, "
                             "\"of_ideal\": %.3g",
                             counts[i], bench_cfg.ncpu, oversubscribed ? "true" : "false", nodes,
                             replays, q1, q3, bench_median(us.v, us.n), bench_median(us1.v, us1.n),
                             row->value / counts[i], ideal, row->value / ideal);
            bench_finish_row(row);
        }
}

/* ------------------------------------------------------------------ valgrind speed */

enum { MEMCHECK_BLOCKS = 18, MEMCHECK_RUNS = 5 };

/* Child mode: `loops` launches of an 18-block kernel of ~`iterations` multiply-adds per
 * block, each followed by a synchronize, after a warm-up one; prints us per loop. */
static int memcheck_child(uint64_t iterations, int loops) {
    mtiart_stream s;
    BENCH_CHECK(mtiart_stream_create(0, 0, &s));
    mtiart_arg arg = {.kind = MTIART_ARG_VALUE, .size = sizeof iterations, .value = &iterations};
    double t0 = 0;
    for (int i = -1; i < loops; i++) {
        if (i == 0) t0 = bench_now_ns();
        BENCH_CHECK(mtiart_launch_kernel(s, k_spin, MEMCHECK_BLOCKS, &arg, 1));
        BENCH_CHECK(mtiart_stream_synchronize(s));
    }
    printf("%.3f\n", (bench_now_ns() - t0) / loops / 1000.0);
    BENCH_CHECK(mtiart_stream_destroy(s));
    return 0;
}

/* The valgrind program: $VALGRIND, else the first `valgrind` on PATH. */
static int find_valgrind(char *out, size_t cap) {
    const char *env = getenv("VALGRIND");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return access(out, X_OK);
    }
    const char *path = getenv("PATH");
    if (!path) return -1;
    for (const char *p = path; *p;) {
        size_t len = strcspn(p, ":");
        if (len && (size_t)snprintf(out, cap, "%.*s/valgrind", (int)len, p) < cap &&
            access(out, X_OK) == 0)
            return 0;
        p += len + (p[len] == ':');
    }
    return -1;
}

static double run_memcheck_child(const char *valgrind, const char *self, uint64_t iterations,
                                 int loops) {
    char a_iter[32], a_loops[32], workers[48], out[4096];
    snprintf(a_iter, sizeof a_iter, "%llu", (unsigned long long)iterations);
    snprintf(a_loops, sizeof a_loops, "%d", loops);
    /* The default worker count (one per CPU), whatever this process was given. */
    snprintf(workers, sizeof workers, "MTIART_NUM_WORKERS=%d", bench_cfg.ncpu);
    char *native[] = {(char *)self, "--memcheck-child", a_iter, a_loops, NULL};
    /* memcheck with its default scheduler (no --fair-sched): what a leak hunter runs */
    char *vg[] = {(char *)valgrind,
                  "--tool=memcheck",
                  "-q",
                  "--log-file=/dev/null",
                  (char *)self,
                  "--memcheck-child",
                  a_iter,
                  a_loops,
                  NULL};
    if (bench_run_child(valgrind ? vg : native, workers, out, sizeof out) != 0) return NAN;
    return strtod(out, NULL);
}

/* An 18-block kernel and a synchronize per iteration, under memcheck and natively, each in
 * processes of their own: the worst of five memcheck runs against the native median. Every
 * wait of the runtime blocks under valgrind, so memcheck's scheduler, which runs one
 * thread at a time and switches only when a thread blocks or its time slice ends, makes
 * progress at once instead of waiting out spinning threads. */
static void bench_memcheck(void) {
    const char *name = "memcheck_blocks_sync";
    if (!bench_selected(name)) return;
    bench_row *r = bench_new_row(name, "us/iter", 0);
    r->ratio_target = 100;
    bench_set_note(r,
                   "an %d-block kernel (~2 us per block natively) + synchronize per "
                   "iteration, under valgrind memcheck (default scheduler, default worker "
                   "count): the worst of %d runs, each its own process",
                   MEMCHECK_BLOCKS, MEMCHECK_RUNS);
    char valgrind[4096], self[4096];
    if (find_valgrind(valgrind, sizeof valgrind) != 0) {
        bench_set_skipped(r, "valgrind is not installed (or $VALGRIND is not executable)");
        bench_finish_row(r);
        return;
    }
    if (bench_self_path(self, sizeof self) != 0) bench_die("cannot find this program's path");
    uint64_t iterations = calibrate_50us() / 25;
    bench_samples native = {0}, vg = {0};
    for (int i = 0; i < MEMCHECK_RUNS; i++) {
        native.v[native.n++] = run_memcheck_child(NULL, self, iterations, 200);
        vg.v[vg.n++] = run_memcheck_child(valgrind, self, iterations, 20);
        if (isnan(native.v[i]) || isnan(vg.v[i])) {
            bench_set_skipped(r, "a child process failed (natively or under %s)", valgrind);
            bench_finish_row(r);
            return;
        }
    }
    double worst = bench_max(vg.v, vg.n), fastest = bench_min(vg.v, vg.n);
    double native_median = bench_median(native.v, native.n);
    r->value = r->vmax = worst;
    r->vmin = fastest;
    r->baseline = native_median;
    r->baseline_name = "the same loop natively (median of 5 runs)";
    r->reps = MEMCHECK_RUNS;
    bench_set_params(r,
                     "\"blocks\": %d, \"workers\": %d, \"memcheck_best_us\": %.4g, "
                     "\"memcheck_median_us\": %.4g, \"valgrind\": \"%s\"",
                     MEMCHECK_BLOCKS, bench_cfg.ncpu, fastest, bench_median(vg.v, vg.n), valgrind);
    bench_finish_row(r);
}

/* ------------------------------------------------------------------ main */

static const char usage[] =
    "usage: bench_runtime [--quick] [--json] [--filter SUBSTRING]... [--reps N] [--list]\n"
    "                     [--scaling [--workers 1,2,4,8,16]]\n";

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "--memcheck-child") == 0) {
        BENCH_CHECK(mtiart_init());
        return memcheck_child(strtoull(argv[2], NULL, 10), atoi(argv[3]));
    }
    if (argc == 6 && strcmp(argv[1], "--scaling-child") == 0) {
        BENCH_CHECK(mtiart_init());
        return scaling_child(argv[2], strtoull(argv[3], NULL, 10), atoi(argv[4]), atoi(argv[5]));
    }
    int scaling = 0, counts[16], ncounts = 0;
    for (int i = 1; i < argc;) {
        int used = bench_common_arg(argc, argv, i, usage);
        if (used) {
            i += used;
        } else if (!strcmp(argv[i], "--scaling")) {
            scaling = 1;
            i++;
        } else if (!strcmp(argv[i], "--workers") && i + 1 < argc) {
            counts[ncounts++] = 1; /* every speedup is over the 1-worker run */
            for (char *tok = strtok(argv[i + 1], ","); tok && ncounts < 16; tok = strtok(NULL, ","))
                if (atoi(tok) > 1) counts[ncounts++] = atoi(tok);
            i += 2;
        } else {
            fputs(usage, stderr);
            return 2;
        }
    }
    bench_args_done();
    bench_start("c", scaling ? "\"mode\": \"scaling\"" : NULL);
    if (ncounts == 0) {
        /* the suite: powers of two up to the CPU count, and the CPU count; --scaling: the
         * table for a many-core machine */
        for (int w = 1; w <= (scaling ? 16 : bench_cfg.ncpu) && ncounts < 15; w *= 2)
            counts[ncounts++] = w;
        if (!scaling && counts[ncounts - 1] != bench_cfg.ncpu) counts[ncounts++] = bench_cfg.ncpu;
    }
    BENCH_CHECK(mtiart_stream_create(0, 0, &g_stream));
    if (!scaling) {
        bench_eager();
        bench_op_add_scalar();
        bench_roundtrips();
        bench_replay();
        bench_trace();
        bench_nested();
        bench_capture();
        bench_capture_buffers();
        bench_input_check();
        bench_update();
        bench_load();
        bench_race_check();
        bench_alloc();
        bench_elementwise();
        bench_cpu_wait();
        bench_memcheck();
    }
    bench_scaling(counts, ncounts);
    bench_print_table();
    BENCH_CHECK(mtiart_stream_destroy(g_stream));
    return 0;
}
