/*
 * harness.h - what the benchmark programs share: timing, interleaved repetitions, rows in
 * the JSON-lines format, the table, child processes, and the graphs every replay row uses.
 *
 * A row's figure and its baseline (or peer) are measured interleaved, rep by rep, in one
 * process, so their ratio holds on a noisy machine even when absolute times drift. JSON row
 * keys: kind ("result"), suite, name, value, unit, baseline, baseline_unit, baseline_name,
 * ratio (value / baseline), better ("lower" | "higher"), target, ratio_target, pass (true |
 * false | null when the row has no target), reps, min, max, params, note, skipped (a reason,
 * or null). One "meta" line first describes the run.
 */
#ifndef MTIART_BENCH_HARNESS_H
#define MTIART_BENCH_HARNESS_H

#include <mtiart.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BENCH_CHECK(call)                                                                          \
    do {                                                                                           \
        mtiart_status st_ = (call);                                                                \
        if (st_ != MTIART_SUCCESS) bench_die_status(__FILE__, __LINE__, #call, st_);               \
    } while (0)

/* Keep the compiler from reasoning about a value or about memory (defeats constant folding
 * and devirtualisation of the baseline loops). */
#define BENCH_OPAQUE(x) __asm__ volatile("" : "+r"(x))
#define BENCH_CLOBBER() __asm__ volatile("" ::: "memory")

void bench_die_status(const char *file, int line, const char *call, mtiart_status st);
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

double bench_now_ns(void);
/* Median and quantile (linear interpolation) of v[0..n); both sort v. */
double bench_median(double *v, int n);
double bench_quantile(double *v, int n, double q);
double bench_min(const double *v, int n);
double bench_max(const double *v, int n);

/* ---- options every program takes: [--quick] [--json] [--filter S]... [--reps N] [--list] */
typedef struct bench_config {
    int quick;
    int json_only;
    int reps;
    const char *filters[16];
    int num_filters;
    int list;
    int ncpu;
    int workers; /* of device 0 */
    int progress;
} bench_config;

extern bench_config bench_cfg;

/* Take the common option at argv[i]: returns how many arguments it used (0: not one of
 * them; --help prints `usage` and exits). */
int bench_common_arg(int argc, char **argv, int i, const char *usage);
/* After the options: defaults for what was not given, the CPU count. */
void bench_args_done(void);
/* mtiart_init, fill ncpu/workers, print the meta line (extra: more JSON members, or NULL). */
void bench_start(const char *suite, const char *extra);
/* Is the row `name` to be run? (With --list, prints the name and says no.) */
int bench_selected(const char *name);

/* ---- rows */
typedef struct bench_row {
    char name[64];
    const char *suite;
    const char *unit;
    double value, vmin, vmax;
    double baseline;
    const char *baseline_unit;
    const char *baseline_name;
    int higher_better;
    double target;       /* NAN: none */
    double ratio_target; /* NAN: none */
    int reps;
    char params[512]; /* JSON object text */
    char note[512];
    char skipped[256]; /* empty: not skipped */
} bench_row;

bench_row *bench_new_row(const char *name, const char *unit, int higher_better);
/* printf-style setters; params gets a JSON object body without the braces. */
void bench_set_params(bench_row *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bench_set_note(bench_row *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bench_set_skipped(bench_row *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print the row's JSON line (and keep it for the table). */
void bench_finish_row(bench_row *r);
/* The table of every finished row, unless --json or --list. */
void bench_print_table(void);

/* ---- interleaved repetitions */
#define BENCH_MAX_REPS 64
typedef double (*bench_fn)(void *ctx);
typedef struct bench_samples {
    double v[BENCH_MAX_REPS];
    int n;
} bench_samples;

/* One warm-up call of each function (unless warm_up is 0: functions that warm up by
 * themselves), then `reps` rounds calling every function once per round, starting at a
 * different one each round so that no side always runs first (or right after the same
 * neighbour). out[i] gets fns[i]'s per-rep figures. */
void bench_interleave(const bench_fn *fns, int nfns, void *ctx, int reps, int warm_up,
                      bench_samples *out);
/* Row figure from samples: value = median, min, max, reps; baseline = median of base
 * (base may be NULL). */
void bench_row_from(bench_row *r, const bench_samples *value, const bench_samples *base);
/* The common case: measure fn against base interleaved (base may be NULL). */
void bench_measure(bench_row *r, bench_fn fn, bench_fn base, void *ctx);

/* ---- kernels and graphs */
int32_t bench_k_empty(void *const *args, uint32_t block, uint32_t num_blocks);

typedef enum bench_shape {
    BENCH_CHAIN = 0,       /* node i depends on node i - 1 */
    BENCH_INDEPENDENT = 1, /* no edges */
    BENCH_FANOUT = 2       /* nodes 1..n-1 depend on node 0 */
} bench_shape;

const char *bench_shape_name(bench_shape shape);
/* A graph of n nodes of `kernel` (args as for mtiart_launch_kernel) in `shape`. */
mtiart_graph bench_build_graph(bench_shape shape, size_t n, mtiart_kernel_fn kernel,
                               const mtiart_arg *args, uint32_t nargs);
mtiart_graph_exec bench_instantiate(bench_shape shape, size_t n);

/* A direct loop over node records, calling each node's kernel the way a replay plan walks
 * them: the floor of every per-op and per-node figure. */
typedef struct bench_direct {
    mtiart_kernel_fn fn;
    void *const *argv;
    size_t n, times;
} bench_direct;
double bench_direct_rep(void *ctx); /* ctx: bench_direct; ns per call */

/* Replays of an n-node graph per rep: about 10^6 nodes (10^5 with --quick), at least 20
 * replays, at most 10,000 (the queue of the back-to-back form stays reasonable). */
int bench_replays_for(size_t n);

/* ---- libmtiart timing loops shared by the programs */
#define BENCH_ROUNDTRIP_CHUNKS 20
/* ns per node of `replays` launches of x (n nodes) on s: each waited for before the next
 * (wait_each) or all back to back, then one synchronize. */
double bench_time_replays(mtiart_graph_exec x, mtiart_stream s, size_t n, int replays,
                          int wait_each);
/* us per launch + synchronize of x on s (x NULL: an empty one-block kernel), over
 * `iterations` in BENCH_ROUNDTRIP_CHUNKS chunks: the median chunk, so that a time slice
 * lost to another process spoils a chunk rather than the rep. */
double bench_time_roundtrips(mtiart_graph_exec x, mtiart_stream s, int iterations);
/* ns per node of `rounds` builds of a ready-to-launch chain of n empty nodes on s: by
 * capture (begin capture, n launches, end capture, instantiate) or explicitly
 * (graph_create, n add_kernel_node, instantiate). Destruction is untimed. With capture,
 * *capture_part (if not NULL) gets the part before instantiate. */
double bench_time_chain_build(mtiart_stream s, size_t n, int rounds, int capture,
                              double *capture_part);

/* ---- child processes */
/* Run argv[0] with argv and `setenv_kv` ("NAME=value" added to, or replacing NAME in, this
 * process's environment; NULL: none), capture up to cap-1 bytes of its stdout into out.
 * Returns 0 when it exited with status 0. */
int bench_run_child(char *const argv[], const char *setenv_kv, char *out, size_t cap);
/* Path of this executable and of a file next to it. */
int bench_self_path(char *out, size_t cap);
int bench_sibling_path(const char *file, char *out, size_t cap);

#ifdef __cplusplus
}
#endif

#endif /* MTIART_BENCH_HARNESS_H */
