/* harness.c - see harness.h. */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

bench_config bench_cfg;

void bench_die_status(const char *file, int line, const char *call, mtiart_status st) {
    fprintf(stderr, "bench: %s:%d: %s failed: %s (%s)\n", file, line, call, mtiart_status_name(st),
            mtiart_last_error_message());
    exit(1);
}

void bench_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

double bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_quantile(double *v, int n, double q) {
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double pos = q * (n - 1);
    int lo = (int)floor(pos);
    int hi = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (pos - lo) * (v[hi] - v[lo]);
}

double bench_median(double *v, int n) { return bench_quantile(v, n, 0.5); }

double bench_min(const double *v, int n) {
    double m = n > 0 ? v[0] : NAN;
    for (int i = 1; i < n; i++)
        if (v[i] < m) m = v[i];
    return m;
}

double bench_max(const double *v, int n) {
    double m = n > 0 ? v[0] : NAN;
    for (int i = 1; i < n; i++)
        if (v[i] > m) m = v[i];
    return m;
}

/* ------------------------------------------------------------------ options */

int bench_common_arg(int argc, char **argv, int i, const char *usage) {
    if (!strcmp(argv[i], "--quick")) bench_cfg.quick = 1;
    else if (!strcmp(argv[i], "--json")) bench_cfg.json_only = 1;
    else if (!strcmp(argv[i], "--list")) bench_cfg.list = 1;
    else if (!strcmp(argv[i], "--filter") && i + 1 < argc) {
        if (bench_cfg.num_filters < 16) bench_cfg.filters[bench_cfg.num_filters++] = argv[i + 1];
        return 2;
    } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
        bench_cfg.reps = atoi(argv[i + 1]);
        return 2;
    } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
        fputs(usage, stdout);
        exit(0);
    } else return 0;
    return 1;
}

void bench_args_done(void) {
    if (bench_cfg.reps <= 0) bench_cfg.reps = bench_cfg.quick ? 3 : 9;
    if (bench_cfg.reps > BENCH_MAX_REPS) bench_cfg.reps = BENCH_MAX_REPS;
    bench_cfg.progress = isatty(2) && !bench_cfg.json_only;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    bench_cfg.ncpu = ncpu > 0 ? (int)ncpu : 1;
}

static const char *default_suite = "c";

void bench_start(const char *suite, const char *extra) {
    default_suite = suite;
    BENCH_CHECK(mtiart_init());
    mtiart_device_properties props;
    BENCH_CHECK(mtiart_device_get_properties(0, &props));
    bench_cfg.workers = props.num_workers;
    if (bench_cfg.list) return;
    printf("{\"kind\": \"meta\", \"suite\": \"%s\", \"libmtiart\": \"%s\", \"workers\": %d, "
           "\"ncpu\": %d, \"quick\": %s, \"reps\": %d%s%s}\n",
           suite, mtiart_version_string(), bench_cfg.workers, bench_cfg.ncpu,
           bench_cfg.quick ? "true" : "false", bench_cfg.reps, extra ? ", " : "",
           extra ? extra : "");
    fflush(stdout);
}

int bench_selected(const char *name) {
    if (bench_cfg.list) {
        printf("%s\n", name);
        return 0;
    }
    if (bench_cfg.num_filters == 0) return 1;
    for (int i = 0; i < bench_cfg.num_filters; i++)
        if (strstr(name, bench_cfg.filters[i])) return 1;
    return 0;
}

/* ------------------------------------------------------------------ rows */

#define MAX_ROWS 128
static bench_row rows[MAX_ROWS];
static int num_rows;

bench_row *bench_new_row(const char *name, const char *unit, int higher_better) {
    if (num_rows == MAX_ROWS) bench_die("too many rows");
    bench_row *r = &rows[num_rows++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->suite = default_suite;
    r->unit = unit;
    r->higher_better = higher_better;
    r->value = r->vmin = r->vmax = r->baseline = r->target = r->ratio_target = NAN;
    return r;
}

void bench_set_params(bench_row *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->params, sizeof r->params, fmt, ap);
    va_end(ap);
}

void bench_set_note(bench_row *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->note, sizeof r->note, fmt, ap);
    va_end(ap);
}

void bench_set_skipped(bench_row *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->skipped, sizeof r->skipped, fmt, ap);
    va_end(ap);
}

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

static double row_ratio(const bench_row *r) {
    return (r->baseline > 0 && !isnan(r->value)) ? r->value / r->baseline : NAN;
}

/* 1 pass, 0 miss, -1 no target */
static int row_pass(const bench_row *r) {
    if (r->skipped[0] || (isnan(r->target) && isnan(r->ratio_target))) return -1;
    int ok = !isnan(r->value);
    if (!isnan(r->target)) ok &= r->higher_better ? r->value >= r->target : r->value <= r->target;
    if (!isnan(r->ratio_target)) {
        double q = row_ratio(r);
        ok &= !isnan(q) && (r->higher_better ? q >= r->ratio_target : q <= r->ratio_target);
    }
    return ok;
}

static void emit_json(const bench_row *r) {
    FILE *f = stdout;
    int skipped = r->skipped[0] != 0;
    fputs("{\"kind\": \"result\", \"suite\": ", f);
    json_string(f, r->suite);
    fputs(", \"name\": ", f);
    json_string(f, r->name);
    fputs(", \"value\": ", f);
    json_number(f, skipped ? NAN : r->value);
    fputs(", \"unit\": ", f);
    json_string(f, r->unit);
    fputs(", \"baseline\": ", f);
    json_number(f, skipped ? NAN : r->baseline);
    fputs(", \"baseline_unit\": ", f);
    json_string(f, r->baseline_unit ? r->baseline_unit : r->unit);
    fputs(", \"baseline_name\": ", f);
    if (r->baseline_name) json_string(f, r->baseline_name);
    else fputs("null", f);
    fputs(", \"ratio\": ", f);
    json_number(f, skipped ? NAN : row_ratio(r));
    fprintf(f, ", \"better\": \"%s\", \"target\": ", r->higher_better ? "higher" : "lower");
    json_number(f, r->target);
    fputs(", \"ratio_target\": ", f);
    json_number(f, r->ratio_target);
    int pass = row_pass(r);
    fprintf(f, ", \"pass\": %s, \"reps\": %d, \"min\": ",
            pass < 0 ? "null"
            : pass   ? "true"
                     : "false",
            skipped ? 0 : r->reps);
    json_number(f, skipped ? NAN : r->vmin);
    fputs(", \"max\": ", f);
    json_number(f, skipped ? NAN : r->vmax);
    fprintf(f, ", \"params\": {%s}, \"note\": ", r->params);
    if (r->note[0]) json_string(f, r->note);
    else fputs("null", f);
    fputs(", \"skipped\": ", f);
    if (skipped) json_string(f, r->skipped);
    else fputs("null", f);
    fputs("}\n", f);
    fflush(f);
}

void bench_finish_row(bench_row *r) {
    emit_json(r);
    if (bench_cfg.progress) fprintf(stderr, "bench: %s done\n", r->name);
}

static void fmt_num(char *out, size_t cap, double v) {
    if (isnan(v)) snprintf(out, cap, "-");
    else if (fabs(v) >= 1000) snprintf(out, cap, "%.0f", v);
    else if (fabs(v) >= 100) snprintf(out, cap, "%.1f", v);
    else if (fabs(v) >= 10) snprintf(out, cap, "%.2f", v);
    else snprintf(out, cap, "%.3g", v);
}

void bench_print_table(void) {
    if (bench_cfg.list || bench_cfg.json_only) return;
    printf("\n%-34s %10s %-8s %10s %8s %-14s %s\n", "benchmark", "median", "unit", "baseline",
           "ratio", "target", "result");
    printf("%.*s\n", 100,
           "----------------------------------------------------------------"
           "----------------------------------------------------------------");
    for (int i = 0; i < num_rows; i++) {
        const bench_row *r = &rows[i];
        char v[32], b[32], q[32], t[64] = "", part[32];
        if (r->skipped[0]) {
            printf("%-34s %10s %-8s %10s %8s %-14s skipped: %s\n", r->name, "-", r->unit, "-", "-",
                   "-", r->skipped);
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
        printf("%-34s %10s %-8s %10s %8s %-14s %s\n", r->name, v, r->unit, b, q, t,
               pass < 0 ? ""
               : pass   ? "PASS"
                        : "MISS");
    }
    printf("\nratio = median / baseline (same process, interleaved reps); baselines:\n");
    for (int i = 0; i < num_rows; i++) {
        const char *bn = rows[i].baseline_name;
        int dup = !bn;
        for (int k = 0; k < i && !dup; k++)
            dup = rows[k].baseline_name && strcmp(rows[k].baseline_name, bn) == 0;
        if (!dup) printf("  %s\n", bn);
    }
}

/* ------------------------------------------------------------------ repetitions */

void bench_interleave(const bench_fn *fns, int nfns, void *ctx, int reps, int warm_up,
                      bench_samples *out) {
    if (reps > BENCH_MAX_REPS) reps = BENCH_MAX_REPS;
    for (int k = 0; k < nfns; k++) {
        if (warm_up) fns[k](ctx);
        out[k].n = 0;
    }
    for (int i = 0; i < reps; i++)
        for (int j = 0; j < nfns; j++) {
            int k = (i + j) % nfns;
            out[k].v[out[k].n++] = fns[k](ctx);
        }
}

void bench_row_from(bench_row *r, const bench_samples *value, const bench_samples *base) {
    double tmp[BENCH_MAX_REPS];
    memcpy(tmp, value->v, sizeof(double) * (size_t)value->n);
    r->reps = value->n;
    r->vmin = bench_min(tmp, value->n);
    r->vmax = bench_max(tmp, value->n);
    r->value = bench_median(tmp, value->n);
    if (base) {
        memcpy(tmp, base->v, sizeof(double) * (size_t)base->n);
        r->baseline = bench_median(tmp, base->n);
    }
}

void bench_measure(bench_row *r, bench_fn fn, bench_fn base, void *ctx) {
    bench_fn fns[2] = {fn, base};
    bench_samples s[2];
    bench_interleave(fns, base ? 2 : 1, ctx, bench_cfg.reps, 1, s);
    bench_row_from(r, &s[0], base ? &s[1] : NULL);
}

/* ------------------------------------------------------------------ kernels and graphs */

__attribute__((noinline)) int32_t bench_k_empty(void *const *args, uint32_t block,
                                                uint32_t num_blocks) {
    (void)args;
    (void)block;
    (void)num_blocks;
    BENCH_CLOBBER();
    return 0;
}

const char *bench_shape_name(bench_shape shape) {
    switch (shape) {
    case BENCH_CHAIN: return "chain";
    case BENCH_INDEPENDENT: return "independent";
    case BENCH_FANOUT: return "fanout";
    }
    return "?";
}

mtiart_graph bench_build_graph(bench_shape shape, size_t n, mtiart_kernel_fn kernel,
                               const mtiart_arg *args, uint32_t nargs) {
    mtiart_graph g;
    BENCH_CHECK(mtiart_graph_create(0, &g));
    size_t prev = 0, root = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t *dep = NULL;
        if (i > 0 && shape == BENCH_CHAIN) dep = &prev;
        if (i > 0 && shape == BENCH_FANOUT) dep = &root;
        size_t node;
        BENCH_CHECK(
            mtiart_graph_add_kernel_node(g, dep, dep ? 1 : 0, kernel, 1, args, nargs, &node));
        if (i == 0) root = node;
        prev = node;
    }
    return g;
}

mtiart_graph_exec bench_instantiate(bench_shape shape, size_t n) {
    mtiart_graph g = bench_build_graph(shape, n, bench_k_empty, NULL, 0);
    mtiart_graph_exec x;
    BENCH_CHECK(mtiart_graph_instantiate(g, &x));
    BENCH_CHECK(mtiart_graph_destroy(g));
    return x;
}

__attribute__((noinline)) static void direct_loop(mtiart_kernel_fn fn, void *const *argv, size_t n,
                                                  size_t times) {
    for (size_t t = 0; t < times; t++)
        for (size_t i = 0; i < n; i++) {
            mtiart_kernel_fn f = fn;
            BENCH_OPAQUE(f);
            f(argv, 0, 1);
        }
}

double bench_direct_rep(void *ctx) {
    bench_direct *d = (bench_direct *)ctx;
    double t0 = bench_now_ns();
    direct_loop(d->fn, d->argv, d->n, d->times);
    return (bench_now_ns() - t0) / (double)(d->n * d->times);
}

int bench_replays_for(size_t n) {
    size_t l = (bench_cfg.quick ? 100000 : 1000000) / n;
    if (l > 10000) l = 10000;
    if (l < 20) l = 20;
    return (int)l;
}

/* ------------------------------------------------------------------ libmtiart loops */

double bench_time_replays(mtiart_graph_exec x, mtiart_stream s, size_t n, int replays,
                          int wait_each) {
    double t0 = bench_now_ns();
    for (int i = 0; i < replays; i++) {
        BENCH_CHECK(mtiart_graph_launch(x, s));
        if (wait_each) BENCH_CHECK(mtiart_stream_synchronize(s));
    }
    BENCH_CHECK(mtiart_stream_synchronize(s));
    return (bench_now_ns() - t0) / ((double)replays * (double)n);
}

double bench_time_roundtrips(mtiart_graph_exec x, mtiart_stream s, int iterations) {
    double chunks[BENCH_ROUNDTRIP_CHUNKS];
    int per_chunk = iterations / BENCH_ROUNDTRIP_CHUNKS;
    for (int k = 0; k < BENCH_ROUNDTRIP_CHUNKS; k++) {
        double t0 = bench_now_ns();
        for (int i = 0; i < per_chunk; i++) {
            if (x) BENCH_CHECK(mtiart_graph_launch(x, s));
            else BENCH_CHECK(mtiart_launch_kernel(s, bench_k_empty, 1, NULL, 0));
            BENCH_CHECK(mtiart_stream_synchronize(s));
        }
        chunks[k] = (bench_now_ns() - t0) / per_chunk / 1000.0;
    }
    return bench_median(chunks, BENCH_ROUNDTRIP_CHUNKS);
}

double bench_time_chain_build(mtiart_stream s, size_t n, int rounds, int capture,
                              double *capture_part) {
    double total = 0, before_instantiate = 0;
    for (int r = 0; r < rounds; r++) {
        mtiart_graph g;
        mtiart_graph_exec x;
        double t0 = bench_now_ns();
        if (capture) {
            mtiart_pool_id pool = {0, 0};
            BENCH_CHECK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, pool));
            for (size_t i = 0; i < n; i++)
                BENCH_CHECK(mtiart_launch_kernel(s, bench_k_empty, 1, NULL, 0));
            BENCH_CHECK(mtiart_stream_end_capture(s, &g));
        } else {
            g = bench_build_graph(BENCH_CHAIN, n, bench_k_empty, NULL, 0);
        }
        double t1 = bench_now_ns();
        BENCH_CHECK(mtiart_graph_instantiate(g, &x));
        double t2 = bench_now_ns();
        total += t2 - t0;
        before_instantiate += t1 - t0;
        BENCH_CHECK(mtiart_graph_exec_destroy(x));
        BENCH_CHECK(mtiart_graph_destroy(g));
    }
    if (capture) BENCH_CHECK(mtiart_empty_cache(0)); /* the private pools of the captures */
    double denom = (double)rounds * (double)n;
    if (capture_part) *capture_part = before_instantiate / denom;
    return total / denom;
}

/* ------------------------------------------------------------------ child processes */

int bench_run_child(char *const argv[], const char *setenv_kv, char *out, size_t cap) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    size_t nenv = 0;
    while (environ[nenv]) nenv++;
    char **env = calloc(nenv + 2, sizeof *env);
    if (!env) bench_die("out of memory");
    size_t k = 0, keylen = 0;
    if (setenv_kv) keylen = (size_t)(strchr(setenv_kv, '=') - setenv_kv) + 1;
    for (size_t i = 0; i < nenv; i++)
        if (!setenv_kv || strncmp(environ[i], setenv_kv, keylen) != 0) env[k++] = environ[i];
    if (setenv_kv) env[k++] = (char *)setenv_kv;
    env[k] = NULL;
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        fprintf(stderr, "bench: cannot spawn %s: %s\n", argv[0], strerror(rc));
        return -1;
    }
    size_t got = 0;
    ssize_t m;
    while (got + 1 < cap && (m = read(fds[0], out + got, cap - 1 - got)) > 0) got += (size_t)m;
    out[got] = '\0';
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int bench_self_path(char *out, size_t cap) {
    ssize_t len = readlink("/proc/self/exe", out, cap - 1);
    if (len <= 0) return -1;
    out[len] = '\0';
    return 0;
}

int bench_sibling_path(const char *file, char *out, size_t cap) {
    char self[4096];
    if (bench_self_path(self, sizeof self) != 0) return -1;
    char *slash = strrchr(self, '/');
    if (!slash) return -1;
    *slash = '\0';
    if ((size_t)snprintf(out, cap, "%s/%s", self, file) >= cap) return -1;
    return 0;
}
