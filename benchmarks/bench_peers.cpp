/*
 * bench_peers.cpp - libmtiart against oneTBB's flow graph: each row's value is libmtiart's
 * figure, its baseline the peer's, and the ratio libmtiart / peer.
 *
 *   bench_peers [--quick] [--json] [--filter SUBSTRING]... [--reps N] [--list]
 *
 * Both sides run the same graph shape with the same empty node body (a call through a
 * function pointer to bench_k_empty, as libmtiart's replay calls a kernel node) on the same
 * number of threads executing nodes: libmtiart's workers (MTIART_NUM_WORKERS, default one
 * per CPU) and a tbb::global_control max_allowed_parallelism of that many threads (TBB's
 * waiting thread executes nodes too, so TBB starts one thread fewer). Every rep of every
 * side runs in a process of its own (this program, re-run in child mode), the sides
 * alternating rep by rep: no side's lingering threads (oneTBB's workers keep spinning a
 * while after wait_for_all returns, libmtiart's for tens of microseconds) ever share the
 * cores with the other side's measurement. Each child warms its side up, then times one
 * rep. benchmarks/README.md says exactly what each side does per row.
 *
 * Built when meson finds a C++ compiler; measures when it found oneTBB
 * (`dependency('tbb')`, Debian: libtbb-dev); without oneTBB every row is printed as skipped,
 * with the reason.
 */
#include "harness.h"

#include <cmath>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#ifdef BENCH_HAVE_TBB
#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/version.h>
#endif

namespace {

enum row_kind { REPLAY_WAIT, REPLAY_B2B, ROUNDTRIP, BUILD_CAPTURE, BUILD_EXPLICIT };

struct row_spec {
    std::string name;
    row_kind kind;
    bench_shape shape;
    size_t n;
};

/* Every row, in output order. */
std::vector<row_spec> all_rows() {
    std::vector<row_spec> rows;
    const struct {
        bench_shape shape;
        size_t sizes[2];
    } replays[] = {{BENCH_CHAIN, {10, 1000}},
                   {BENCH_FANOUT, {1000, 10000}},
                   {BENCH_INDEPENDENT, {1000, 10000}}};
    for (const auto &r : replays)
        for (size_t n : r.sizes)
            for (row_kind k : {REPLAY_WAIT, REPLAY_B2B})
                rows.push_back({std::string("peer_tbb_") + bench_shape_name(r.shape) + "_" +
                                    std::to_string(n) + (k == REPLAY_B2B ? "_b2b" : "_wait"),
                                k, r.shape, n});
    rows.push_back({"peer_tbb_one_task_roundtrip", ROUNDTRIP, BENCH_CHAIN, 1});
    rows.push_back({"peer_tbb_build_capture_1000", BUILD_CAPTURE, BENCH_CHAIN, 1000});
    rows.push_back({"peer_tbb_build_explicit_1000", BUILD_EXPLICIT, BENCH_CHAIN, 1000});
    return rows;
}

const char *unit_of(const row_spec &r) {
    return r.kind == ROUNDTRIP ? "us" : "ns/node";
}

#ifdef BENCH_HAVE_TBB

int roundtrip_iterations() { return bench_cfg.quick ? 200 : 2000; }
int build_rounds() { return bench_cfg.quick ? 3 : 20; }

using tbb::flow::continue_msg;
using node_t = tbb::flow::continue_node<continue_msg>;

continue_msg empty_body(const continue_msg &) {
    mtiart_kernel_fn f = bench_k_empty;
    BENCH_OPAQUE(f);
    f(nullptr, 0, 1);
    return continue_msg();
}

/* A flow graph of n continue_nodes in `shape`, started by a try_put on the first node
 * (chain, fan-out) or on a broadcast_node feeding every node (independent; it has no
 * body). */
struct tbb_graph {
    tbb::flow::graph g;
    std::deque<node_t> nodes;
    std::unique_ptr<tbb::flow::broadcast_node<continue_msg>> source;

    tbb_graph(bench_shape shape, size_t n) {
        if (shape == BENCH_INDEPENDENT) source.reset(new tbb::flow::broadcast_node<continue_msg>(g));
        for (size_t i = 0; i < n; i++) {
            nodes.emplace_back(g, empty_body);
            if (shape == BENCH_CHAIN && i > 0) tbb::flow::make_edge(nodes[i - 1], nodes[i]);
            if (shape == BENCH_FANOUT && i > 0) tbb::flow::make_edge(nodes[0], nodes[i]);
            if (shape == BENCH_INDEPENDENT) tbb::flow::make_edge(*source, nodes[i]);
        }
    }
    void start() {
        if (source) source->try_put(continue_msg());
        else nodes[0].try_put(continue_msg());
    }
};

/* One rep of one side, per node (us for the round trip). */
double mt_rep(const row_spec &r, mtiart_stream s, mtiart_graph_exec x) {
    switch (r.kind) {
    case REPLAY_WAIT:
    case REPLAY_B2B:
        return bench_time_replays(x, s, r.n, bench_replays_for(r.n), r.kind == REPLAY_WAIT);
    case ROUNDTRIP: return bench_time_roundtrips(x, s, roundtrip_iterations());
    default: return bench_time_chain_build(s, r.n, build_rounds(), r.kind == BUILD_CAPTURE, nullptr);
    }
}

/* As bench_time_replays and bench_time_roundtrips, for the flow graph. */
double tbb_rep(const row_spec &r, tbb_graph *peer) {
    if (r.kind == REPLAY_WAIT || r.kind == REPLAY_B2B) {
        int replays = bench_replays_for(r.n);
        double t0 = bench_now_ns();
        for (int i = 0; i < replays; i++) {
            peer->start();
            if (r.kind == REPLAY_WAIT) peer->g.wait_for_all();
        }
        peer->g.wait_for_all();
        return (bench_now_ns() - t0) / (replays * double(r.n));
    }
    if (r.kind == ROUNDTRIP) {
        double chunks[BENCH_ROUNDTRIP_CHUNKS];
        int each = roundtrip_iterations() / BENCH_ROUNDTRIP_CHUNKS;
        for (int k = 0; k < BENCH_ROUNDTRIP_CHUNKS; k++) {
            double t0 = bench_now_ns();
            for (int i = 0; i < each; i++) {
                peer->start();
                peer->g.wait_for_all();
            }
            chunks[k] = (bench_now_ns() - t0) / each / 1000.0;
        }
        return bench_median(chunks, BENCH_ROUNDTRIP_CHUNKS);
    }
    double total = 0;
    for (int k = 0; k < build_rounds(); k++) {
        double t0 = bench_now_ns();
        auto *g = new tbb_graph(BENCH_CHAIN, r.n);
        total += bench_now_ns() - t0;
        delete g;
    }
    return total / (build_rounds() * double(r.n));
}

/* Child mode: warm the side up with one rep, print the figure of the next. */
int run_child(const row_spec &r, bool tbb_side, int threads) {
    double v;
    if (tbb_side) {
        tbb::global_control limit(tbb::global_control::max_allowed_parallelism, size_t(threads));
        std::unique_ptr<tbb_graph> peer;
        if (r.kind != BUILD_CAPTURE && r.kind != BUILD_EXPLICIT)
            peer.reset(new tbb_graph(r.kind == ROUNDTRIP ? BENCH_CHAIN : r.shape, r.n));
        tbb_rep(r, peer.get());
        v = tbb_rep(r, peer.get());
    } else {
        BENCH_CHECK(mtiart_init());
        mtiart_stream s;
        BENCH_CHECK(mtiart_stream_create(0, 0, &s));
        mtiart_graph_exec x = nullptr;
        if (r.kind != BUILD_CAPTURE && r.kind != BUILD_EXPLICIT) x = bench_instantiate(r.shape, r.n);
        mt_rep(r, s, x);
        v = mt_rep(r, s, x);
        if (x) BENCH_CHECK(mtiart_graph_exec_destroy(x));
        BENCH_CHECK(mtiart_stream_destroy(s));
    }
    printf("%.6g\n", v);
    return 0;
}

/* ---- parent: spawn one child per side per rep */
struct side_ctx {
    size_t index;
    const char *side;
};

double spawn_side(void *p) {
    auto *c = static_cast<side_ctx *>(p);
    char self[4096], index[32], threads[32], out[256];
    if (bench_self_path(self, sizeof self) != 0) return NAN;
    snprintf(index, sizeof index, "%zu", c->index);
    snprintf(threads, sizeof threads, "%d", bench_cfg.workers);
    char *argv[] = {self, const_cast<char *>("--child"), index, const_cast<char *>(c->side),
                    threads, const_cast<char *>(bench_cfg.quick ? "--quick" : "--full"),
                    nullptr};
    if (bench_run_child(argv, nullptr, out, sizeof out) != 0) return NAN;
    return strtod(out, nullptr);
}

struct pair_ctx {
    side_ctx mt, tbb;
};
double spawn_mt(void *p) { return spawn_side(&static_cast<pair_ctx *>(p)->mt); }
double spawn_tbb(void *p) { return spawn_side(&static_cast<pair_ctx *>(p)->tbb); }

const char *peer_name(const row_spec &r) {
    switch (r.kind) {
    case REPLAY_WAIT:
        return "oneTBB flow graph: try_put to the start node, then graph::wait_for_all(), per "
               "pass";
    case REPLAY_B2B: return "oneTBB flow graph: every try_put to the start node, then one "
                            "graph::wait_for_all()";
    case ROUNDTRIP: return "oneTBB flow graph of one continue_node: try_put + wait_for_all()";
    default:
        return "oneTBB flow graph: construct a graph, 1000 continue_nodes and 999 make_edge "
               "calls (a ready-to-run chain)";
    }
}

void describe(bench_row *row, const row_spec &r) {
    const char *shape = r.shape == BENCH_CHAIN    ? "chain"
                        : r.shape == BENCH_FANOUT ? "one root node, every other node depends on it"
                                                  : "no edges";
    switch (r.kind) {
    case REPLAY_WAIT:
    case REPLAY_B2B:
        bench_set_params(row, "\"nodes\": %zu, \"shape\": \"%s\", \"replays_per_rep\": %d, "
                              "\"threads\": %d, \"tbb\": \"%d.%d\"",
                         r.n, bench_shape_name(r.shape), bench_replays_for(r.n),
                         bench_cfg.workers, TBB_VERSION_MAJOR, TBB_VERSION_MINOR);
        bench_set_note(row, "%s; libmtiart: %s; per node", shape,
                       r.kind == REPLAY_B2B
                           ? "every mtiart_graph_launch, then one synchronize (TBB may overlap "
                             "successive passes; replays of one libmtiart graph run in order)"
                           : "mtiart_graph_launch + mtiart_stream_synchronize per replay");
        break;
    case ROUNDTRIP:
        bench_set_params(row, "\"iterations_per_rep\": %d, \"chunks\": %d, \"threads\": %d",
                         roundtrip_iterations(), BENCH_ROUNDTRIP_CHUNKS, bench_cfg.workers);
        bench_set_note(row, "libmtiart: mtiart_graph_launch of a one-node graph + "
                            "mtiart_stream_synchronize (the node runs on a worker; TBB's may "
                            "run on the waiting thread)");
        break;
    case BUILD_CAPTURE:
        row->target = 30;
        bench_set_params(row, "\"nodes\": %zu, \"builds_per_rep\": %d", r.n, build_rounds());
        bench_set_note(row, "libmtiart: begin capture, 1000 empty launches, end capture, "
                            "instantiate (a ready-to-launch chain); per node, destruction "
                            "untimed");
        break;
    case BUILD_EXPLICIT:
        bench_set_params(row, "\"nodes\": %zu, \"builds_per_rep\": %d", r.n, build_rounds());
        bench_set_note(row, "libmtiart: mtiart_graph_create, 1000 mtiart_graph_add_kernel_node "
                            "(each depending on the previous), instantiate; per node, "
                            "destruction untimed");
        break;
    }
}

void run_rows(const std::vector<row_spec> &rows) {
    for (size_t i = 0; i < rows.size(); i++) {
        const row_spec &r = rows[i];
        if (!bench_selected(r.name.c_str())) continue;
        pair_ctx c = {{i, "mtiart"}, {i, "tbb"}};
        bench_fn fns[2] = {spawn_mt, spawn_tbb};
        bench_samples s[2];
        bench_interleave(fns, 2, &c, bench_cfg.reps, 0, s); /* each child warms up */
        bench_row *row = bench_new_row(r.name.c_str(), unit_of(r), 0);
        row->baseline_name = peer_name(r);
        describe(row, r);
        bool failed = false;
        for (int k = 0; k < 2; k++)
            for (int j = 0; j < s[k].n; j++) failed |= std::isnan(s[k].v[j]);
        if (failed) bench_set_skipped(row, "a child process failed");
        else bench_row_from(row, &s[0], &s[1]);
        bench_finish_row(row);
    }
}

#else

void run_rows(const std::vector<row_spec> &rows) {
    for (const row_spec &r : rows) {
        if (!bench_selected(r.name.c_str())) continue;
        bench_row *row = bench_new_row(r.name.c_str(), unit_of(r), 0);
        bench_set_skipped(row, "oneTBB was not found when the benchmarks were built (Debian: "
                               "apt-get install libtbb-dev, then rebuild)");
        bench_finish_row(row);
    }
}

#endif /* BENCH_HAVE_TBB */

const char usage[] =
    "usage: bench_peers [--quick] [--json] [--filter SUBSTRING]... [--reps N] [--list]\n";

} // namespace

int main(int argc, char **argv) {
    std::vector<row_spec> rows = all_rows();
#ifdef BENCH_HAVE_TBB
    if (argc == 6 && strcmp(argv[1], "--child") == 0) {
        size_t index = strtoul(argv[2], nullptr, 10);
        bench_cfg.quick = strcmp(argv[5], "--quick") == 0;
        if (index >= rows.size()) return 2;
        return run_child(rows[index], strcmp(argv[3], "tbb") == 0, atoi(argv[4]));
    }
#endif
    for (int i = 1; i < argc;) {
        int used = bench_common_arg(argc, argv, i, usage);
        if (!used) {
            fputs(usage, stderr);
            return 2;
        }
        i += used;
    }
    bench_args_done();
#ifdef BENCH_HAVE_TBB
    char extra[96];
    snprintf(extra, sizeof extra, "\"peer\": \"oneTBB %d.%d\"", TBB_VERSION_MAJOR,
             TBB_VERSION_MINOR);
    bench_start("peer", extra);
#else
    bench_start("peer", "\"peer\": null");
#endif
    run_rows(rows);
    bench_print_table();
    return 0;
}
