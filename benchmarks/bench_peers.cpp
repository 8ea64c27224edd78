/*
 * bench_peers.cpp - libmtiart against oneTBB's flow graph, measured interleaved in one
 * process: each row's value is libmtiart's figure, its baseline the peer's, and the ratio
 * libmtiart / peer.
 *
 *   bench_peers [--quick] [--json] [--filter SUBSTRING]... [--reps N] [--list]
 *
 * Both sides run the same graph shape with the same empty node body (a call through a
 * function pointer to bench_k_empty, as libmtiart's replay calls a kernel node) on the same
 * number of threads executing nodes: libmtiart's workers (MTIART_NUM_WORKERS, default one
 * per CPU) and a tbb::global_control max_allowed_parallelism of that many threads (TBB's
 * waiting thread executes nodes too, so TBB starts one thread fewer). Each side sleeps 2 ms,
 * untimed, before each of its reps so the other side's spinning threads have gone to sleep.
 * benchmarks/README.md says exactly what each side does per row.
 *
 * Built when meson finds oneTBB (`dependency('tbb')`, Debian: libtbb-dev); without it the
 * program still builds and prints every row as skipped, with the reason.
 */
#include "harness.h"

#include <cmath>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <unistd.h>

#ifdef BENCH_HAVE_TBB
#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/version.h>
#endif

namespace {

const bench_shape kShapes[] = {BENCH_CHAIN, BENCH_FANOUT, BENCH_INDEPENDENT};

/* The graph sizes of each shape's rows. */
const size_t kChainSizes[] = {10, 1000};
const size_t kWideSizes[] = {1000, 10000};

std::string replay_row_name(bench_shape shape, size_t n, bool b2b) {
    return std::string("peer_tbb_") + bench_shape_name(shape) + "_" + std::to_string(n) +
           (b2b ? "_b2b" : "_wait");
}

template <typename F> void for_each_replay_row(F f) {
    for (bench_shape shape : kShapes) {
        const size_t *sizes = shape == BENCH_CHAIN ? kChainSizes : kWideSizes;
        for (int k = 0; k < 2; k++)
            for (int b2b = 0; b2b <= 1; b2b++) f(shape, sizes[k], b2b != 0);
    }
}

const char *const kRoundtrip = "peer_tbb_one_task_roundtrip";
const char *const kBuildCapture = "peer_tbb_build_capture_1000";
const char *const kBuildExplicit = "peer_tbb_build_explicit_1000";

#ifdef BENCH_HAVE_TBB

void settle() { usleep(2000); }

using tbb::flow::continue_msg;
using node_t = tbb::flow::continue_node<continue_msg>;

continue_msg empty_body(const continue_msg &) {
    mtiart_kernel_fn f = bench_k_empty;
    BENCH_OPAQUE(f);
    f(nullptr, 0, 1);
    return continue_msg();
}

/* A flow graph of n continue_nodes in `shape`; started by a try_put on `start`: the first
 * node (chain, fan-out) or a broadcast_node feeding every node (independent: no body). */
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

mtiart_stream g_stream;

struct replay_ctx {
    mtiart_graph_exec exec;
    tbb_graph *peer;
    size_t n;
    int replays;
};

double mt_wait(void *p) {
    auto *c = static_cast<replay_ctx *>(p);
    settle();
    double t0 = bench_now_ns();
    for (int i = 0; i < c->replays; i++) {
        BENCH_CHECK(mtiart_graph_launch(c->exec, g_stream));
        BENCH_CHECK(mtiart_stream_synchronize(g_stream));
    }
    return (bench_now_ns() - t0) / (double(c->replays) * double(c->n));
}

double mt_b2b(void *p) {
    auto *c = static_cast<replay_ctx *>(p);
    settle();
    double t0 = bench_now_ns();
    for (int i = 0; i < c->replays; i++) BENCH_CHECK(mtiart_graph_launch(c->exec, g_stream));
    BENCH_CHECK(mtiart_stream_synchronize(g_stream));
    return (bench_now_ns() - t0) / (double(c->replays) * double(c->n));
}

double tbb_wait(void *p) {
    auto *c = static_cast<replay_ctx *>(p);
    settle();
    double t0 = bench_now_ns();
    for (int i = 0; i < c->replays; i++) {
        c->peer->start();
        c->peer->g.wait_for_all();
    }
    return (bench_now_ns() - t0) / (double(c->replays) * double(c->n));
}

double tbb_b2b(void *p) {
    auto *c = static_cast<replay_ctx *>(p);
    settle();
    double t0 = bench_now_ns();
    for (int i = 0; i < c->replays; i++) c->peer->start();
    c->peer->g.wait_for_all();
    return (bench_now_ns() - t0) / (double(c->replays) * double(c->n));
}

const char *peer_name_wait =
    "oneTBB flow graph: try_put to the graph's start node, then graph::wait_for_all(), per "
    "replay";
const char *peer_name_b2b =
    "oneTBB flow graph: every try_put to the start node, then one graph::wait_for_all()";

void bench_replays() {
    for_each_replay_row([](bench_shape shape, size_t n, bool b2b) {
        std::string name = replay_row_name(shape, n, b2b);
        if (!bench_selected(name.c_str())) return;
        tbb_graph peer(shape, n);
        replay_ctx c = {bench_instantiate(shape, n), &peer, n, bench_replays_for(n)};
        bench_row *r = bench_new_row(name.c_str(), "ns/node", 0);
        if (b2b) bench_measure(r, mt_b2b, tbb_b2b, &c);
        else bench_measure(r, mt_wait, tbb_wait, &c);
        r->baseline_name = b2b ? peer_name_b2b : peer_name_wait;
        bench_set_params(r, "\"nodes\": %zu, \"shape\": \"%s\", \"replays_per_rep\": %d, "
                            "\"threads\": %d, \"tbb\": \"%d.%d\"",
                         n, bench_shape_name(shape), c.replays, bench_cfg.workers,
                         TBB_VERSION_MAJOR, TBB_VERSION_MINOR);
        bench_set_note(r, "%s; libmtiart: %s; per node",
                       shape == BENCH_CHAIN ? "chain" : shape == BENCH_FANOUT
                                                            ? "one root node, every other node depends on it"
                                                            : "no edges",
                       b2b ? "every mtiart_graph_launch, then one synchronize (TBB may overlap "
                             "successive passes; replays of one libmtiart graph run in order)"
                           : "mtiart_graph_launch + mtiart_stream_synchronize per replay");
        bench_finish_row(r);
        BENCH_CHECK(mtiart_graph_exec_destroy(c.exec));
    });
}

/* ---- one-task round trip, chunked as bench_runtime's round trips */
enum { CHUNKS = 20 };

struct roundtrip_ctx {
    mtiart_graph_exec exec;
    tbb_graph *peer;
    int iterations;
};

double mt_roundtrip(void *p) {
    auto *c = static_cast<roundtrip_ctx *>(p);
    settle();
    double chunks[CHUNKS];
    int per = c->iterations / CHUNKS;
    for (int k = 0; k < CHUNKS; k++) {
        double t0 = bench_now_ns();
        for (int i = 0; i < per; i++) {
            BENCH_CHECK(mtiart_graph_launch(c->exec, g_stream));
            BENCH_CHECK(mtiart_stream_synchronize(g_stream));
        }
        chunks[k] = (bench_now_ns() - t0) / per / 1000.0;
    }
    return bench_median(chunks, CHUNKS);
}

double tbb_roundtrip(void *p) {
    auto *c = static_cast<roundtrip_ctx *>(p);
    settle();
    double chunks[CHUNKS];
    int per = c->iterations / CHUNKS;
    for (int k = 0; k < CHUNKS; k++) {
        double t0 = bench_now_ns();
        for (int i = 0; i < per; i++) {
            c->peer->start();
            c->peer->g.wait_for_all();
        }
        chunks[k] = (bench_now_ns() - t0) / per / 1000.0;
    }
    return bench_median(chunks, CHUNKS);
}

void bench_roundtrip() {
    if (!bench_selected(kRoundtrip)) return;
    tbb_graph peer(BENCH_CHAIN, 1);
    roundtrip_ctx c = {bench_instantiate(BENCH_CHAIN, 1), &peer, bench_cfg.quick ? 200 : 2000};
    bench_row *r = bench_new_row(kRoundtrip, "us", 0);
    bench_measure(r, mt_roundtrip, tbb_roundtrip, &c);
    r->baseline_name = "oneTBB flow graph of one continue_node: try_put + wait_for_all()";
    bench_set_params(r, "\"iterations_per_rep\": %d, \"chunks\": %d, \"threads\": %d",
                     c.iterations, CHUNKS, bench_cfg.workers);
    bench_set_note(r, "libmtiart: mtiart_graph_launch of a one-node graph + "
                      "mtiart_stream_synchronize (the node runs on a worker; TBB's runs on the "
                      "waiting thread)");
    bench_finish_row(r);
    BENCH_CHECK(mtiart_graph_exec_destroy(c.exec));
}

/* ---- graph build, per node */
struct build_ctx {
    size_t n;
    int rounds;
};

double mt_capture_build(void *p) {
    auto *c = static_cast<build_ctx *>(p);
    settle();
    double total = 0;
    for (int r = 0; r < c->rounds; r++) {
        mtiart_graph g;
        mtiart_graph_exec x;
        double t0 = bench_now_ns();
        BENCH_CHECK(mtiart_stream_begin_capture(g_stream, MTIART_CAPTURE_MODE_GLOBAL, {0, 0}));
        for (size_t i = 0; i < c->n; i++)
            BENCH_CHECK(mtiart_launch_kernel(g_stream, bench_k_empty, 1, nullptr, 0));
        BENCH_CHECK(mtiart_stream_end_capture(g_stream, &g));
        BENCH_CHECK(mtiart_graph_instantiate(g, &x));
        total += bench_now_ns() - t0;
        BENCH_CHECK(mtiart_graph_exec_destroy(x));
        BENCH_CHECK(mtiart_graph_destroy(g));
    }
    BENCH_CHECK(mtiart_empty_cache(0)); /* the private pools of the captures */
    return total / (double(c->rounds) * double(c->n));
}

double mt_explicit_build(void *p) {
    auto *c = static_cast<build_ctx *>(p);
    settle();
    double total = 0;
    for (int r = 0; r < c->rounds; r++) {
        mtiart_graph_exec x;
        double t0 = bench_now_ns();
        mtiart_graph g = bench_build_graph(BENCH_CHAIN, c->n, bench_k_empty, nullptr, 0);
        BENCH_CHECK(mtiart_graph_instantiate(g, &x));
        total += bench_now_ns() - t0;
        BENCH_CHECK(mtiart_graph_exec_destroy(x));
        BENCH_CHECK(mtiart_graph_destroy(g));
    }
    return total / (double(c->rounds) * double(c->n));
}

double tbb_build(void *p) {
    auto *c = static_cast<build_ctx *>(p);
    settle();
    double total = 0;
    for (int r = 0; r < c->rounds; r++) {
        double t0 = bench_now_ns();
        auto *g = new tbb_graph(BENCH_CHAIN, c->n);
        total += bench_now_ns() - t0;
        delete g;
    }
    return total / (double(c->rounds) * double(c->n));
}

void bench_build() {
    build_ctx c = {1000, bench_cfg.quick ? 3 : 20};
    const char *peer = "oneTBB flow graph: construct a graph, 1000 continue_nodes and 999 "
                       "make_edge calls (a ready-to-run chain)";
    if (bench_selected(kBuildCapture)) {
        bench_row *r = bench_new_row(kBuildCapture, "ns/node", 0);
        bench_measure(r, mt_capture_build, tbb_build, &c);
        r->baseline_name = peer;
        r->target = 30;
        bench_set_params(r, "\"nodes\": %zu, \"builds_per_rep\": %d", c.n, c.rounds);
        bench_set_note(r, "libmtiart: begin capture, 1000 empty launches, end capture, "
                          "instantiate (a ready-to-launch chain); per node, destruction untimed");
        bench_finish_row(r);
    }
    if (bench_selected(kBuildExplicit)) {
        bench_row *r = bench_new_row(kBuildExplicit, "ns/node", 0);
        bench_measure(r, mt_explicit_build, tbb_build, &c);
        r->baseline_name = peer;
        bench_set_params(r, "\"nodes\": %zu, \"builds_per_rep\": %d", c.n, c.rounds);
        bench_set_note(r, "libmtiart: mtiart_graph_create, 1000 mtiart_graph_add_kernel_node "
                          "(each depending on the previous), instantiate; per node, "
                          "destruction untimed");
        bench_finish_row(r);
    }
}

#else

/* Without oneTBB every row is still printed, skipped with the reason. */
void skip_all(const char *reason) {
    auto skip = [reason](const std::string &name, const char *unit) {
        if (!bench_selected(name.c_str())) return;
        bench_row *r = bench_new_row(name.c_str(), unit, 0);
        bench_set_skipped(r, "%s", reason);
        bench_finish_row(r);
    };
    for_each_replay_row([&](bench_shape shape, size_t n, bool b2b) {
        skip(replay_row_name(shape, n, b2b), "ns/node");
    });
    skip(kRoundtrip, "us");
    skip(kBuildCapture, "ns/node");
    skip(kBuildExplicit, "ns/node");
}

#endif /* BENCH_HAVE_TBB */

const char usage[] =
    "usage: bench_peers [--quick] [--json] [--filter SUBSTRING]... [--reps N] [--list]\n";

} // namespace

int main(int argc, char **argv) {
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
    tbb::global_control threads(tbb::global_control::max_allowed_parallelism,
                                size_t(bench_cfg.workers));
    BENCH_CHECK(mtiart_stream_create(0, 0, &g_stream));
    bench_replays();
    bench_roundtrip();
    bench_build();
    BENCH_CHECK(mtiart_stream_destroy(g_stream));
#else
    bench_start("peer", "\"peer\": null");
    skip_all("oneTBB was not found when the benchmarks were built (Debian: apt-get install "
             "libtbb-dev, then rebuild)");
#endif
    bench_print_table();
    return 0;
}
