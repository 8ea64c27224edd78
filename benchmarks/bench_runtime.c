/*
 * bench_runtime.c - libmtiart's C benchmarks.
 *
 * Every row is a median over several repetitions and comes with a baseline measured in the
 * same process, interleaved with the measured figure rep by rep (a direct C call of the same
 * kernel function, libc malloc/free, memcpy, a two-thread ping-pong, ...), so the ratio
 * holds on a noisy machine even when the absolute figure drifts. Targets are the project
 * goals of ANCHORS.md. This is a benchmark, never a test: it fails (exit 1) only when the
 * runtime reports an error, never because of a time.
 *
 *   bench_runtime [--quick] [--json] [--filter SUBSTRING] [--reps N] [--list]
 *
 *   --quick   one short pass (CI: proves every benchmark runs; figures are rough)
 *   --json    JSON lines only (one object per row); default: JSON lines, then a table
 *   --filter  run only the rows whose name contains SUBSTRING (repeatable)
 *   --reps N  repetitions per row (default 9, 3 with --quick)
 *
 * JSON row keys: kind ("result"), suite ("c"), name, value, unit, baseline, baseline_unit,
 * baseline_name, ratio (value / baseline), better ("lower" | "higher"), target,
 * ratio_target, pass (true | false | null when no target), reps, min, max, params, note,
 * skipped (a reason, or null). One "meta" line first describes the run.
 *
 * Kernel-library operations (mtiart_op_binary) are looked up with dlsym, so this program
 * builds and runs before the kernel library is linked into libmtiart (the row is skipped).
 */
#define _GNU_SOURCE
#include <mtiart.h>

#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ------------------------------------------------------------------ plumbing */

#define CHECK(call)                                                                        \
    do {                                                                                   \
        mtiart_status st_ = (call);                                                        \
        if (st_ != MTIART_SUCCESS) {                                                       \
            fprintf(stderr, "bench_runtime: %s:%d: %s failed: %s (%s)\n", __FILE__,        \
                    __LINE__, #call, mtiart_status_name(st_), mtiart_last_error_message()); \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static inline double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Keep the compiler from reasoning about a value (defeats constant folding and
 * devirtualisation of the baseline loops). */
#define OPAQUE(x) __asm__ volatile("" : "+r"(x))
#define CLOBBER() __asm__ volatile("" ::: "memory")

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static struct {
    int quick;
    int json_only;
    int reps;
    const char *filters[16];
    int num_filters;
    int list;
    int ncpu;
    int workers;
    int progress;
} cfg;

static int selected(const char *name) {
    if (cfg.list) {
        printf("%s\n", name);
        return 0;
    }
    if (cfg.num_filters == 0) return 1;
    for (int i = 0; i < cfg.num_filters; i++)
        if (strstr(name, cfg.filters[i])) return 1;
    return 0;
}

/* ------------------------------------------------------------------ rows */

typedef struct row {
    char name[64];
    const char *unit;
    double value, vmin, vmax;
    double baseline;
    const char *baseline_unit;
    const char *baseline_name;
    int higher_better;
    double target;       /* NAN: none */
    double ratio_target; /* NAN: none */
    int reps;
    char params[256];    /* JSON object text */
    const char *note;
    const char *skipped;
} row;

#define MAX_ROWS 64
static row rows[MAX_ROWS];
static int num_rows;

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

static void json_number(FILE *f, double v) {
    if (isnan(v) || isinf(v)) fputs("null", f);
    else fprintf(f, "%.6g", v);
}

static double row_ratio(const row *r) {
    return (r->baseline > 0 && !isnan(r->value)) ? r->value / r->baseline : NAN;
}

/* 1 pass, 0 fail, -1 no target */
static int row_pass(const row *r) {
    if (r->skipped || (isnan(r->target) && isnan(r->ratio_target))) return -1;
    int ok = 1;
    if (!isnan(r->target)) ok &= r->higher_better ? r->value >= r->target : r->value <= r->target;
    if (!isnan(r->ratio_target)) {
        double q = row_ratio(r);
        ok &= !isnan(q) && (r->higher_better ? q >= r->ratio_target : q <= r->ratio_target);
    }
    return ok;
}

static void emit_json(const row *r) {
    FILE *f = stdout;
    fputs("{\"kind\": \"result\", \"suite\": \"c\", \"name\": ", f);
    json_string(f, r->name);
    fputs(", \"value\": ", f);
    json_number(f, r->value);
    fputs(", \"unit\": ", f);
    json_string(f, r->unit);
    fputs(", \"baseline\": ", f);
    json_number(f, r->baseline);
    fputs(", \"baseline_unit\": ", f);
    json_string(f, r->baseline_unit ? r->baseline_unit : r->unit);
    fputs(", \"baseline_name\": ", f);
    json_string(f, r->baseline_name);
    fputs(", \"ratio\": ", f);
    json_number(f, row_ratio(r));
    fprintf(f, ", \"better\": \"%s\", \"target\": ", r->higher_better ? "higher" : "lower");
    json_number(f, r->target);
    fputs(", \"ratio_target\": ", f);
    json_number(f, r->ratio_target);
    int pass = row_pass(r);
    fprintf(f, ", \"pass\": %s, \"reps\": %d, \"min\": ",
            pass < 0 ? "null" : pass ? "true" : "false", r->reps);
    json_number(f, r->vmin);
    fputs(", \"max\": ", f);
    json_number(f, r->vmax);
    fprintf(f, ", \"params\": %s, \"note\": ", r->params[0] ? r->params : "{}");
    if (r->note) json_string(f, r->note);
    else fputs("null", f);
    fputs(", \"skipped\": ", f);
    if (r->skipped) json_string(f, r->skipped);
    else fputs("null", f);
    fputs("}\n", f);
    fflush(f);
}

static row *new_row(const char *name, const char *unit, int higher_better) {
    if (num_rows == MAX_ROWS) {
        fprintf(stderr, "bench_runtime: too many rows\n");
        exit(1);
    }
    row *r = &rows[num_rows++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->unit = unit;
    r->higher_better = higher_better;
    r->value = r->vmin = r->vmax = r->baseline = r->target = r->ratio_target = NAN;
    return r;
}

static void finish_row(row *r) {
    emit_json(r);
    if (cfg.progress) fprintf(stderr, "bench_runtime: %s done\n", r->name);
}

/* Measure `fn` (the figure) and `base` (its baseline) interleaved, rep by rep; each call
 * returns one rep's per-unit figure. Fills value/min/max/baseline of the row. */
typedef double (*measure_fn)(void *ctx);

static void measure(row *r, measure_fn fn, measure_fn base, void *ctx) {
    double v[64], b[64];
    int reps = cfg.reps > 64 ? 64 : cfg.reps;
    fn(ctx); /* warm-up */
    if (base) base(ctx);
    for (int i = 0; i < reps; i++) {
        v[i] = fn(ctx);
        b[i] = base ? base(ctx) : NAN;
    }
    r->reps = reps;
    double lo = v[0], hi = v[0];
    for (int i = 1; i < reps; i++) {
        if (v[i] < lo) lo = v[i];
        if (v[i] > hi) hi = v[i];
    }
    r->vmin = lo;
    r->vmax = hi;
    r->value = median(v, reps);
    if (base) r->baseline = median(b, reps);
}

/* ------------------------------------------------------------------ kernels */

__attribute__((noinline)) static int32_t k_empty(void *const *args, uint32_t block,
                                                 uint32_t num_blocks) {
    (void)args;
    (void)block;
    (void)num_blocks;
    CLOBBER();
    return 0;
}

static volatile uint64_t spin_sink[64];

/* ~`iterations` dependent multiply-adds: a compute-bound node for the scaling row. */
__attribute__((noinline)) static uint64_t spin_work(uint64_t iterations, uint64_t seed) {
    uint64_t x = seed | 1;
    for (uint64_t i = 0; i < iterations; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        OPAQUE(x);
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

/* ------------------------------------------------------------------ shared state */

static mtiart_stream g_stream; /* a created (non-default) stream */

/* A direct loop over node records, as the replay plan walks them: the baseline of every
 * per-op and per-node figure. */
typedef struct direct_node {
    mtiart_kernel_fn fn;
    void **argv;
} direct_node;

__attribute__((noinline)) static void direct_loop(direct_node *nodes, size_t n, size_t times) {
    for (size_t t = 0; t < times; t++)
        for (size_t i = 0; i < n; i++) {
            mtiart_kernel_fn fn = nodes[i].fn;
            OPAQUE(fn);
            fn(nodes[i].argv, 0, 1);
        }
}

static direct_node *direct_nodes(size_t n) {
    direct_node *nodes = calloc(n, sizeof *nodes);
    if (!nodes) exit(1);
    for (size_t i = 0; i < n; i++) nodes[i].fn = k_empty;
    return nodes;
}

typedef struct direct_ctx {
    direct_node *nodes;
    size_t n, times;
} direct_ctx;

static double direct_rep(void *p) {
    direct_ctx *c = p;
    double t0 = now_ns();
    direct_loop(c->nodes, c->n, c->times);
    return (now_ns() - t0) / (double)(c->n * c->times);
}

/* ------------------------------------------------------------------ eager */

enum { EAGER_BATCH = 1000 };

typedef struct eager_ctx {
    direct_ctx direct;
    int batches;
    double last_with_sync;
    double with_sync[64];
    int nsync;
} eager_ctx;

static double eager_rep(void *p) {
    eager_ctx *c = p;
    double enqueue = 0, total = 0;
    for (int b = 0; b < c->batches; b++) {
        double t0 = now_ns();
        for (int i = 0; i < EAGER_BATCH; i++) CHECK(mtiart_launch_kernel(g_stream, k_empty, 1, NULL, 0));
        double t1 = now_ns();
        CHECK(mtiart_stream_synchronize(g_stream));
        double t2 = now_ns();
        enqueue += t1 - t0;
        total += t2 - t0;
    }
    if (c->nsync < 64) c->with_sync[c->nsync++] = total / (c->batches * (double)EAGER_BATCH);
    return enqueue / (c->batches * (double)EAGER_BATCH);
}

static void bench_eager(void) {
    int want_enqueue = selected("eager_enqueue"), want_sync = selected("eager_op_incl_sync");
    if (!want_enqueue && !want_sync) return;
    eager_ctx c = {.direct = {direct_nodes(EAGER_BATCH), EAGER_BATCH, cfg.quick ? 10 : 100},
                   .batches = cfg.quick ? 5 : 50};
    row tmp;
    row *r = want_enqueue ? new_row("eager_enqueue", "ns/op", 0) : &tmp;
    memset(&tmp, 0, sizeof tmp);
    measure(r, eager_rep, direct_rep, &c);
    if (want_enqueue) {
        r->baseline_name = "direct call of the same kernel function in a loop";
        r->target = 40;
        snprintf(r->params, sizeof r->params,
                 "{\"batch\": %d, \"batches_per_rep\": %d, \"kernel\": \"empty, 1 block\"}",
                 EAGER_BATCH, c.batches);
        r->note = "enqueue only (batches of 1000 launches, then synchronize, untimed)";
        finish_row(r);
    }
    if (want_sync) {
        row *s = new_row("eager_op_incl_sync", "ns/op", 0);
        s->value = median(c.with_sync + 1, c.nsync - 1); /* first was the warm-up */
        s->vmin = c.with_sync[1];
        s->vmax = c.with_sync[c.nsync - 1];
        s->reps = c.nsync - 1;
        s->baseline = r->baseline;
        s->baseline_name = "direct call of the same kernel function in a loop";
        snprintf(s->params, sizeof s->params, "{\"batch\": %d}", EAGER_BATCH);
        s->note = "batches of 1000 launches including the final synchronize";
        finish_row(s);
    }
    free(c.direct.nodes);
}

/* The kernel-library op behind Python's t.add_(1): a 1-element in-place add. */
typedef mtiart_status (*op_binary_scalar_fn)(mtiart_stream, mtiart_binary_op,
                                             const mtiart_tensor_desc *,
                                             const mtiart_tensor_desc *, double, int64_t, int);

typedef struct op_ctx {
    direct_ctx direct;
    op_binary_scalar_fn op;
    mtiart_tensor_desc d;
    int batches;
    double with_sync[64];
    int nsync;
} op_ctx;

static double op_rep(void *p) {
    op_ctx *c = p;
    double enqueue = 0, total = 0;
    for (int b = 0; b < c->batches; b++) {
        double t0 = now_ns();
        for (int i = 0; i < EAGER_BATCH; i++)
            CHECK(c->op(g_stream, MTIART_BINARY_ADD, &c->d, &c->d, 1.0, 0, 0));
        double t1 = now_ns();
        CHECK(mtiart_stream_synchronize(g_stream));
        enqueue += t1 - t0;
        total += now_ns() - t0;
    }
    if (c->nsync < 64) c->with_sync[c->nsync++] = total / (c->batches * (double)EAGER_BATCH);
    return enqueue / (c->batches * (double)EAGER_BATCH);
}

static void bench_op_add_scalar(void) {
    if (!selected("op_add_scalar_enqueue")) return;
    row *r = new_row("op_add_scalar_enqueue", "ns/op", 0);
    r->baseline_name = "direct call of the same kernel function in a loop";
    r->note = "mtiart_op_binary_scalar ADD in place on a 1-element float32 tensor (what "
              "Python's t.add_(1) calls), enqueue only; batches of 1000, then synchronize";
    op_ctx c = {.direct = {direct_nodes(EAGER_BATCH), EAGER_BATCH, cfg.quick ? 10 : 100},
                .batches = cfg.quick ? 5 : 50};
    *(void **)&c.op = dlsym(RTLD_DEFAULT, "mtiart_op_binary_scalar");
    if (!c.op) {
        r->skipped = "mtiart_op_binary_scalar is not in this libmtiart (kernel library not built in)";
        finish_row(r);
        free(c.direct.nodes);
        return;
    }
    void *buf;
    CHECK(mtiart_malloc(0, sizeof(float), &buf));
    CHECK(mtiart_memset_async(g_stream, buf, 0, sizeof(float)));
    c.d = (mtiart_tensor_desc){.data = buf, .dtype = MTIART_DTYPE_FLOAT32, .ndim = 1, .shape = {1}};
    measure(r, op_rep, direct_rep, &c);
    double incl = median(c.with_sync + 1, c.nsync - 1);
    snprintf(r->params, sizeof r->params,
             "{\"batch\": %d, \"batches_per_rep\": %d, \"incl_sync_ns_per_op\": %.4g}",
             EAGER_BATCH, c.batches, incl);
    finish_row(r);
    CHECK(mtiart_free(buf));
    free(c.direct.nodes);
}

/* ------------------------------------------------------------------ round trips */

/* Round trips are timed in chunks and each rep reports the median chunk, so a time slice
 * lost to another process spoils one chunk rather than the rep (2-core machines). */
#define ROUNDTRIP_CHUNKS 20

/* Baseline of the round trips: one message to a spinning thread and back. */
typedef struct pingpong {
    atomic_int flag; /* 0 idle, 1 ping, 2 pong, 3 stop */
    pthread_t thread;
    int iterations;
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

static double pingpong_rep(void *p) {
    pingpong *pp = ((void **)p)[0];
    usleep(1000); /* let the runtime's workers stop spinning and fall asleep */
    /* start the partner per rep so it does not steal a core from the runtime's workers
     * while the measured figure runs */
    atomic_store(&pp->flag, 0);
    pthread_create(&pp->thread, NULL, pong_main, pp);
    double chunks[ROUNDTRIP_CHUNKS];
    int per_chunk = pp->iterations / ROUNDTRIP_CHUNKS;
    for (int k = 0; k < ROUNDTRIP_CHUNKS; k++) {
        double t0 = now_ns();
        for (int i = 0; i < per_chunk; i++) {
            atomic_store_explicit(&pp->flag, 1, memory_order_release);
            while (atomic_load_explicit(&pp->flag, memory_order_acquire) != 2)
                __builtin_ia32_pause();
        }
        chunks[k] = (now_ns() - t0) / per_chunk / 1000.0;
    }
    double t = median(chunks, ROUNDTRIP_CHUNKS);
    atomic_store(&pp->flag, 3);
    pthread_join(pp->thread, NULL);
    return t;
}

typedef struct roundtrip_ctx {
    pingpong *pp;
    mtiart_graph_exec exec;
    int iterations;
} roundtrip_ctx;

static double launch_wait_rep(void *p) {
    roundtrip_ctx *c = p;
    double chunks[ROUNDTRIP_CHUNKS];
    int per_chunk = c->iterations / ROUNDTRIP_CHUNKS;
    for (int k = 0; k < ROUNDTRIP_CHUNKS; k++) {
        double t0 = now_ns();
        for (int i = 0; i < per_chunk; i++) {
            CHECK(mtiart_launch_kernel(g_stream, k_empty, 1, NULL, 0));
            CHECK(mtiart_stream_synchronize(g_stream));
        }
        chunks[k] = (now_ns() - t0) / per_chunk / 1000.0;
    }
    return median(chunks, ROUNDTRIP_CHUNKS);
}

static double graph1_rep(void *p) {
    roundtrip_ctx *c = p;
    double chunks[ROUNDTRIP_CHUNKS];
    int per_chunk = c->iterations / ROUNDTRIP_CHUNKS;
    for (int k = 0; k < ROUNDTRIP_CHUNKS; k++) {
        double t0 = now_ns();
        for (int i = 0; i < per_chunk; i++) {
            CHECK(mtiart_graph_launch(c->exec, g_stream));
            CHECK(mtiart_stream_synchronize(g_stream));
        }
        chunks[k] = (now_ns() - t0) / per_chunk / 1000.0;
    }
    return median(chunks, ROUNDTRIP_CHUNKS);
}

static void bench_roundtrips(void) {
    pingpong pp = {.iterations = cfg.quick ? 200 : 2000};
    roundtrip_ctx c = {.pp = &pp, .iterations = cfg.quick ? 200 : 2000};
    const char *bname = "one message to a spinning thread and back (ping-pong)";
    if (selected("launch_wait_roundtrip")) {
        row *r = new_row("launch_wait_roundtrip", "us", 0);
        measure(r, launch_wait_rep, pingpong_rep, &c);
        r->baseline_name = bname;
        snprintf(r->params, sizeof r->params, "{\"iterations_per_rep\": %d, \"chunks\": %d}", c.iterations, ROUNDTRIP_CHUNKS);
        r->note = "launch one empty kernel, then synchronize";
        finish_row(r);
    }
    if (selected("graph_launch_1node")) {
        mtiart_graph g;
        size_t node;
        CHECK(mtiart_graph_create(0, &g));
        CHECK(mtiart_graph_add_kernel_node(g, NULL, 0, k_empty, 1, NULL, 0, &node));
        CHECK(mtiart_graph_instantiate(g, &c.exec));
        CHECK(mtiart_graph_destroy(g));
        row *r = new_row("graph_launch_1node", "us", 0);
        measure(r, graph1_rep, pingpong_rep, &c);
        r->baseline_name = bname;
        r->target = 1.5;
        snprintf(r->params, sizeof r->params, "{\"iterations_per_rep\": %d, \"chunks\": %d}", c.iterations, ROUNDTRIP_CHUNKS);
        r->note = "mtiart_graph_launch of a one-node graph, then synchronize";
        finish_row(r);
        CHECK(mtiart_graph_exec_destroy(c.exec));
    }
}

/* ------------------------------------------------------------------ graph replay */

typedef struct replay_ctx {
    direct_ctx direct;
    mtiart_graph_exec exec;
    size_t n;
    int launches;
} replay_ctx;

static double replay_rep(void *p) {
    replay_ctx *c = p;
    double t0 = now_ns();
    for (int i = 0; i < c->launches; i++) CHECK(mtiart_graph_launch(c->exec, g_stream));
    CHECK(mtiart_stream_synchronize(g_stream));
    return (now_ns() - t0) / ((double)c->launches * (double)c->n);
}

static mtiart_graph_exec build_graph(size_t n, int chain) {
    mtiart_graph g;
    CHECK(mtiart_graph_create(0, &g));
    size_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        size_t node;
        int dep = chain && i > 0;
        CHECK(mtiart_graph_add_kernel_node(g, dep ? &prev : NULL, dep ? 1 : 0, k_empty, 1, NULL,
                                           0, &node));
        prev = node;
    }
    mtiart_graph_exec x;
    CHECK(mtiart_graph_instantiate(g, &x));
    CHECK(mtiart_graph_destroy(g));
    return x;
}

static void bench_replay(void) {
    static const size_t sizes[] = {10, 100, 1000, 10000};
    for (int chain = 1; chain >= 0; chain--)
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
            size_t n = sizes[k];
            char name[64];
            snprintf(name, sizeof name, "replay_%s_%zu", chain ? "chain" : "independent", n);
            if (!selected(name)) continue;
            size_t per_rep = cfg.quick ? 100000 : 2000000; /* nodes per rep */
            replay_ctx c = {.n = n, .launches = (int)(per_rep / n)};
            if (c.launches > 20000) c.launches = 20000; /* queue depth stays reasonable */
            if (c.launches < 2) c.launches = 2;
            c.direct = (direct_ctx){direct_nodes(n), n, (size_t)c.launches};
            c.exec = build_graph(n, chain);
            row *r = new_row(name, "ns/node", 0);
            measure(r, replay_rep, direct_rep, &c);
            r->baseline_name = "direct loop calling the same kernel function per node";
            if (n == 1000 && chain) {
                r->target = 8;
                r->ratio_target = 4;
            }
            if (n == 1000 && !chain) r->target = 20;
            snprintf(r->params, sizeof r->params,
                     "{\"nodes\": %zu, \"shape\": \"%s\", \"launches_per_rep\": %d, "
                     "\"workers\": %d}",
                     n, chain ? "chain" : "independent", c.launches, cfg.workers);
            r->note = "launch the graph many times, then synchronize; per node";
            finish_row(r);
            CHECK(mtiart_graph_exec_destroy(c.exec));
            free(c.direct.nodes);
        }
}

/* ------------------------------------------------------------------ capture */

typedef struct capture_ctx {
    size_t n;
    int rounds;
    double capture_part[64], inst_part[64];
    int parts;
} capture_ctx;

static double capture_rep(void *p) {
    capture_ctx *c = p;
    double cap = 0, inst = 0;
    for (int r = 0; r < c->rounds; r++) {
        mtiart_pool_id pool = {0, 0};
        mtiart_graph g;
        mtiart_graph_exec x;
        double t0 = now_ns();
        CHECK(mtiart_stream_begin_capture(g_stream, MTIART_CAPTURE_MODE_GLOBAL, pool));
        for (size_t i = 0; i < c->n; i++) CHECK(mtiart_launch_kernel(g_stream, k_empty, 1, NULL, 0));
        CHECK(mtiart_stream_end_capture(g_stream, &g));
        double t1 = now_ns();
        CHECK(mtiart_graph_instantiate(g, &x));
        double t2 = now_ns();
        cap += t1 - t0;
        inst += t2 - t1;
        CHECK(mtiart_graph_exec_destroy(x));
        CHECK(mtiart_graph_destroy(g));
    }
    CHECK(mtiart_empty_cache(0)); /* the private pools of the captures */
    double denom = (double)c->rounds * (double)c->n;
    if (c->parts < 64) {
        c->capture_part[c->parts] = cap / denom;
        c->inst_part[c->parts++] = inst / denom;
    }
    return (cap + inst) / denom;
}

static double build_rep(void *p) {
    capture_ctx *c = p;
    double total = 0;
    for (int r = 0; r < c->rounds; r++) {
        mtiart_graph g;
        mtiart_graph_exec x;
        double t0 = now_ns();
        CHECK(mtiart_graph_create(0, &g));
        size_t prev = 0, node;
        for (size_t i = 0; i < c->n; i++) {
            CHECK(mtiart_graph_add_kernel_node(g, i ? &prev : NULL, i ? 1 : 0, k_empty, 1, NULL,
                                               0, &node));
            prev = node;
        }
        CHECK(mtiart_graph_instantiate(g, &x));
        total += now_ns() - t0;
        CHECK(mtiart_graph_exec_destroy(x));
        CHECK(mtiart_graph_destroy(g));
    }
    return total / ((double)c->rounds * (double)c->n);
}

static void bench_capture(void) {
    if (!selected("capture_instantiate")) return;
    capture_ctx c = {.n = 1000, .rounds = cfg.quick ? 3 : 20};
    row *r = new_row("capture_instantiate", "ns/node", 0);
    measure(r, capture_rep, build_rep, &c);
    r->baseline_name = "explicit build of the same chain (graph_create + add_kernel_node + "
                       "instantiate)";
    r->target = 100;
    double capture_only = median(c.capture_part + 1, c.parts - 1);
    double inst_only = median(c.inst_part + 1, c.parts - 1);
    snprintf(r->params, sizeof r->params,
             "{\"nodes\": %zu, \"capture_ns_per_node\": %.4g, \"instantiate_ns_per_node\": %.4g}",
             c.n, capture_only, inst_only);
    r->note = "begin capture, 1000 empty launches, end capture, instantiate; per node";
    finish_row(r);
}

/* ------------------------------------------------------------------ allocator */

typedef struct alloc_ctx {
    int pairs;
    size_t size;
} alloc_ctx;

static double alloc_rep(void *p) {
    alloc_ctx *c = p;
    double t0 = now_ns();
    for (int i = 0; i < c->pairs; i++) {
        void *ptr;
        CHECK(mtiart_malloc_async(g_stream, c->size, &ptr));
        CHECK(mtiart_free(ptr));
    }
    return (now_ns() - t0) / c->pairs;
}

static double libc_alloc_rep(void *p) {
    alloc_ctx *c = p;
    double t0 = now_ns();
    for (int i = 0; i < c->pairs; i++) {
        void *ptr = malloc(c->size);
        OPAQUE(ptr);
        free(ptr);
    }
    return (now_ns() - t0) / c->pairs;
}

static void bench_alloc(void) {
    if (!selected("alloc_free_pair")) return;
    alloc_ctx c = {.pairs = cfg.quick ? 20000 : 200000, .size = 1024};
    row *r = new_row("alloc_free_pair", "ns", 0);
    measure(r, alloc_rep, libc_alloc_rep, &c);
    r->baseline_name = "libc malloc + free of the same size";
    r->target = 30;
    snprintf(r->params, sizeof r->params, "{\"bytes\": %zu, \"pairs_per_rep\": %d}", c.size,
             c.pairs);
    r->note = "mtiart_malloc_async + mtiart_free on one stream";
    finish_row(r);
}

/* ------------------------------------------------------------------ elementwise */

typedef mtiart_status (*op_binary_fn)(mtiart_stream, mtiart_binary_op, const mtiart_tensor_desc *,
                                      const mtiart_tensor_desc *, const mtiart_tensor_desc *);

typedef struct ew_ctx {
    op_binary_fn op;
    mtiart_tensor_desc out, a, b;
    size_t bytes; /* of one operand */
    char *src, *dst;
    int times;
} ew_ctx;

static double ew_rep(void *p) {
    ew_ctx *c = p;
    double t0 = now_ns();
    for (int i = 0; i < c->times; i++) CHECK(c->op(g_stream, MTIART_BINARY_ADD, &c->out, &c->a, &c->b));
    CHECK(mtiart_stream_synchronize(g_stream));
    double t = (now_ns() - t0) / c->times;
    return 3.0 * (double)c->bytes / t; /* bytes per ns = GB/s: read a, b; write out */
}

static double memcpy_rep(void *p) {
    ew_ctx *c = p;
    double t0 = now_ns();
    for (int i = 0; i < c->times; i++) {
        memcpy(c->dst, c->src, c->bytes);
        CLOBBER();
    }
    double t = (now_ns() - t0) / c->times;
    return 2.0 * (double)c->bytes / t; /* read src, write dst */
}

static void bench_elementwise(void) {
    if (!selected("elementwise_add_f32")) return;
    row *r = new_row("elementwise_add_f32", "GB/s", 1);
    r->baseline_name = "memcpy of the same bytes (single thread), read + write traffic";
    r->ratio_target = 0.8;
    const size_t n = 16u << 20;
    snprintf(r->params, sizeof r->params,
             "{\"elements\": %zu, \"dtype\": \"float32\", \"traffic\": \"3 x %zu bytes\"}", n,
             n * 4);
    r->note = "mtiart_op_binary ADD out = a + b, then synchronize";
    ew_ctx c = {.bytes = n * sizeof(float), .times = cfg.quick ? 1 : 4};
    *(void **)&c.op = dlsym(RTLD_DEFAULT, "mtiart_op_binary");
    if (!c.op) {
        r->skipped = "mtiart_op_binary is not in this libmtiart (kernel library not built in)";
        finish_row(r);
        return;
    }
    void *a, *b, *out;
    CHECK(mtiart_malloc(0, c.bytes, &a));
    CHECK(mtiart_malloc(0, c.bytes, &b));
    CHECK(mtiart_malloc(0, c.bytes, &out));
    CHECK(mtiart_memset_async(g_stream, a, 0, c.bytes));
    CHECK(mtiart_memset_async(g_stream, b, 0, c.bytes));
    CHECK(mtiart_memset_async(g_stream, out, 0, c.bytes));
    CHECK(mtiart_stream_synchronize(g_stream));
    mtiart_tensor_desc d = {.dtype = MTIART_DTYPE_FLOAT32, .ndim = 1, .shape = {(int64_t)n}};
    c.out = c.a = c.b = d;
    c.out.data = out;
    c.a.data = a;
    c.b.data = b;
    c.src = malloc(c.bytes);
    c.dst = malloc(c.bytes);
    if (!c.src || !c.dst) exit(1);
    memset(c.src, 1, c.bytes);
    memset(c.dst, 0, c.bytes);
    measure(r, ew_rep, memcpy_rep, &c);
    finish_row(r);
    free(c.src);
    free(c.dst);
    CHECK(mtiart_free(a));
    CHECK(mtiart_free(b));
    CHECK(mtiart_free(out));
    CHECK(mtiart_stream_synchronize(g_stream));
    CHECK(mtiart_empty_cache(0));
}

/* ------------------------------------------------------------------ scaling */

/* Child mode: replay a graph of `nodes` independent spin nodes `replays` times per rep;
 * prints the median ns per replay. Runs with the MTIART_NUM_WORKERS its parent chose. */
static int scaling_child(uint64_t iterations, int nodes, int replays, int reps) {
    mtiart_stream s;
    CHECK(mtiart_stream_create(0, 0, &s));
    mtiart_graph g;
    CHECK(mtiart_graph_create(0, &g));
    mtiart_arg arg = {.kind = MTIART_ARG_VALUE, .size = sizeof iterations, .value = &iterations};
    for (int i = 0; i < nodes; i++) {
        size_t node;
        CHECK(mtiart_graph_add_kernel_node(g, NULL, 0, k_spin, 1, &arg, 1, &node));
    }
    mtiart_graph_exec x;
    CHECK(mtiart_graph_instantiate(g, &x));
    CHECK(mtiart_graph_destroy(g));
    double v[64];
    if (reps > 64) reps = 64;
    CHECK(mtiart_graph_launch(x, s)); /* warm-up */
    CHECK(mtiart_stream_synchronize(s));
    for (int r = 0; r < reps; r++) {
        double t0 = now_ns();
        for (int i = 0; i < replays; i++) CHECK(mtiart_graph_launch(x, s));
        CHECK(mtiart_stream_synchronize(s));
        v[r] = (now_ns() - t0) / replays;
    }
    printf("%.1f\n", median(v, reps));
    CHECK(mtiart_graph_exec_destroy(x));
    CHECK(mtiart_stream_destroy(s));
    return 0;
}

static double run_scaling_child(const char *self, int workers, uint64_t iterations, int nodes,
                                int replays, int reps) {
    int fds[2];
    if (pipe(fds) != 0) return NAN;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    char a_iter[32], a_nodes[32], a_replays[32], a_reps[32], env_workers[48];
    snprintf(a_iter, sizeof a_iter, "%llu", (unsigned long long)iterations);
    snprintf(a_nodes, sizeof a_nodes, "%d", nodes);
    snprintf(a_replays, sizeof a_replays, "%d", replays);
    snprintf(a_reps, sizeof a_reps, "%d", reps);
    snprintf(env_workers, sizeof env_workers, "MTIART_NUM_WORKERS=%d", workers);
    size_t nenv = 0;
    while (environ[nenv]) nenv++;
    char **env = calloc(nenv + 2, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < nenv; i++)
        if (strncmp(environ[i], "MTIART_NUM_WORKERS=", 19) != 0) env[k++] = environ[i];
    env[k++] = env_workers;
    env[k] = NULL;
    char *argv[] = {(char *)self, "--scaling-child", a_iter, a_nodes, a_replays, a_reps, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, self, &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        fprintf(stderr, "bench_runtime: cannot spawn %s: %s\n", self, strerror(rc));
        return NAN;
    }
    char buf[128] = {0};
    size_t got = 0;
    ssize_t m;
    while (got < sizeof buf - 1 && (m = read(fds[0], buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)m;
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return NAN;
    return strtod(buf, NULL);
}

static void bench_scaling(void) {
    char name[64];
    int any = 0;
    for (int w = 1; w <= cfg.ncpu; w++) {
        snprintf(name, sizeof name, "scaling_workers_%d", w);
        if (cfg.list) {
            selected(name);
            continue;
        }
        any |= selected(name);
    }
    if (!any || cfg.list) return;
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) return;
    self[len] = '\0';
    /* Calibrate one node to about 50 us of arithmetic on this machine. */
    uint64_t iterations = 1u << 16;
    for (;;) {
        double t0 = now_ns();
        spin_sink[0] = spin_work(iterations, 7);
        double t = now_ns() - t0;
        if (t > 2e5 || iterations > (1ull << 40)) {
            iterations = (uint64_t)((double)iterations * 50e3 / t);
            break;
        }
        iterations *= 2;
    }
    const int per_worker = 8;
    int nodes = cfg.ncpu * per_worker;
    int replays = cfg.quick ? 5 : 40, reps = cfg.quick ? 3 : cfg.reps;
    double t1 = NAN;
    for (int w = 1; w <= cfg.ncpu; w++) {
        double tw = run_scaling_child(self, w, iterations, nodes, replays, reps);
        if (w == 1) t1 = tw;
        snprintf(name, sizeof name, "scaling_workers_%d", w);
        if (!selected(name)) continue;
        row *r = new_row(name, "x", 1);
        r->value = t1 / tw;
        r->vmin = r->vmax = r->value;
        r->baseline = 1.0;
        r->baseline_unit = "x";
        r->baseline_name = "the same replays with MTIART_NUM_WORKERS=1";
        r->reps = reps;
        snprintf(r->params, sizeof r->params,
                 "{\"workers\": %d, \"nodes\": %d, \"node_us\": 50, \"us_per_replay\": %.4g, "
                 "\"us_per_replay_1_worker\": %.4g, \"efficiency\": %.3g}",
                 w, nodes, tw / 1000.0, t1 / 1000.0, t1 / tw / w);
        r->note = "independent ~50 us compute nodes; speedup over 1 worker (separate processes)";
        if (isnan(tw)) r->skipped = "the child process failed";
        finish_row(r);
    }
}

/* ------------------------------------------------------------------ table */

static void fmt_num(char *out, size_t cap, double v) {
    if (isnan(v)) snprintf(out, cap, "-");
    else if (fabs(v) >= 1000) snprintf(out, cap, "%.0f", v);
    else if (fabs(v) >= 100) snprintf(out, cap, "%.1f", v);
    else if (fabs(v) >= 10) snprintf(out, cap, "%.2f", v);
    else snprintf(out, cap, "%.3g", v);
}

static void print_table(void) {
    printf("\n%-28s %12s %-8s %12s %8s %-14s %s\n", "benchmark", "median", "unit", "baseline",
           "ratio", "target", "result");
    printf("%.*s\n", 96, "------------------------------------------------------------------"
                         "------------------------------------------------------------------");
    for (int i = 0; i < num_rows; i++) {
        const row *r = &rows[i];
        char v[32], b[32], q[32], t[64] = "", part[32];
        if (r->skipped) {
            printf("%-28s %12s %-8s %12s %8s %-14s skipped: %s\n", r->name, "-", r->unit, "-",
                   "-", "-", r->skipped);
            continue;
        }
        fmt_num(v, sizeof v, r->value);
        fmt_num(b, sizeof b, r->baseline);
        fmt_num(q, sizeof q, row_ratio(r));
        const char *op = r->higher_better ? ">=" : "<=";
        if (!isnan(r->target)) {
            fmt_num(part, sizeof part, r->target);
            snprintf(t + strlen(t), sizeof t - strlen(t), "%s%s", op, part);
        }
        if (!isnan(r->ratio_target)) {
            fmt_num(part, sizeof part, r->ratio_target);
            snprintf(t + strlen(t), sizeof t - strlen(t), "%s%s%sx", t[0] ? " " : "", op, part);
        }
        if (!t[0]) snprintf(t, sizeof t, "-");
        int pass = row_pass(r);
        printf("%-28s %12s %-8s %12s %8s %-14s %s\n", r->name, v, r->unit, b, q, t,
               pass < 0 ? "" : pass ? "PASS" : "MISS");
    }
    printf("\nratio = median / baseline (same process, interleaved reps); baselines:\n");
    const char *seen[MAX_ROWS];
    int nseen = 0;
    for (int i = 0; i < num_rows; i++) {
        const char *bn = rows[i].baseline_name;
        if (!bn) continue;
        int dup = 0;
        for (int k = 0; k < nseen; k++) dup |= strcmp(seen[k], bn) == 0;
        if (dup) continue;
        seen[nseen++] = bn;
        printf("  %s\n", bn);
    }
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f) {
    fprintf(f, "usage: bench_runtime [--quick] [--json] [--filter SUBSTRING]... [--reps N] "
               "[--list]\n");
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "--scaling-child") == 0)
        return scaling_child(strtoull(argv[2], NULL, 10), atoi(argv[3]), atoi(argv[4]),
                             atoi(argv[5]));
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) cfg.quick = 1;
        else if (!strcmp(argv[i], "--json")) cfg.json_only = 1;
        else if (!strcmp(argv[i], "--list")) cfg.list = 1;
        else if (!strcmp(argv[i], "--filter") && i + 1 < argc && cfg.num_filters < 16)
            cfg.filters[cfg.num_filters++] = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) cfg.reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (cfg.reps <= 0) cfg.reps = cfg.quick ? 3 : 9;
    cfg.progress = isatty(2) && !cfg.json_only;
    if (cfg.reps > 64) cfg.reps = 64;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cfg.ncpu = ncpu > 0 ? (int)ncpu : 1;

    CHECK(mtiart_init());
    mtiart_device_properties props;
    CHECK(mtiart_device_get_properties(0, &props));
    cfg.workers = props.num_workers;
    CHECK(mtiart_stream_create(0, 0, &g_stream));

    if (!cfg.list) {
        printf("{\"kind\": \"meta\", \"suite\": \"c\", \"libmtiart\": \"%s\", \"workers\": %d, "
               "\"ncpu\": %d, \"quick\": %s, \"reps\": %d}\n",
               mtiart_version_string(), cfg.workers, cfg.ncpu, cfg.quick ? "true" : "false",
               cfg.reps);
        fflush(stdout);
    }
    bench_eager();
    bench_op_add_scalar();
    bench_roundtrips();
    bench_replay();
    bench_capture();
    bench_alloc();
    bench_elementwise();
    bench_scaling();
    if (!cfg.list && !cfg.json_only) print_table();
    CHECK(mtiart_stream_destroy(g_stream));
    return 0;
}
