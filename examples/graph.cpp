/*
 * graph.cpp - libmtiart from C++ with mtiart.hpp.
 *
 * y = a * x + y as a user kernel over device buffers: captured once into a graph with a
 * capture scope, replayed five times, copied back and checked. Owners release every
 * stream, buffer and graph on the way out, also when a call throws.
 *
 * Build against an installed libmtiart:
 *     c++ -std=c++17 graph.cpp $(pkg-config --cflags --libs mtiart) -o graph && ./graph
 */
#include <cstdio>
#include <vector>

#include "mtiart.hpp"

namespace {

constexpr uint32_t kCount = 4096;
constexpr uint32_t kReplays = 5;

struct axpy_params {
    float a;
    uint32_t count;
};

/* One block of y[i] += a * x[i]; args are: x (in), y (in/out), the parameters (value). */
int32_t axpy(void *const *args, uint32_t block, uint32_t num_blocks) {
    const float *x = *static_cast<const float *const *>(args[0]);
    float *y = *static_cast<float *const *>(args[1]);
    const auto *p = static_cast<const axpy_params *>(args[2]);
    uint32_t per_block = (p->count + num_blocks - 1) / num_blocks;
    uint32_t end = (block + 1) * per_block < p->count ? (block + 1) * per_block : p->count;
    for (uint32_t i = block * per_block; i < end; i++) y[i] += p->a * x[i];
    return 0;
}

}  // namespace

int main() {
    try {
        std::printf("libmtiart %s, %d device(s)\n", mtiart_version_string(), mtiart::device_count());
        mtiart::stream s;
        mtiart::device_buffer<float> x(std::vector<float>(kCount, 1.0f), s);
        mtiart::device_buffer<float> y(kCount, s);
        y.fill_async(0.0f);

        mtiart::graph g;
        {
            mtiart::capture scope(s);  // abandoned if anything below throws
            axpy_params params{2.0f, kCount};
            s.launch(axpy, 4, {mtiart::arg::in(x), mtiart::arg::inout(y), mtiart::arg::value(params)});
            g = scope.end();
        }
        mtiart::executable exec = g.instantiate();
        std::printf("captured %zu node(s) into pool (%llu, %llu)\n", g.node_count(),
                    static_cast<unsigned long long>(g.pool().first),
                    static_cast<unsigned long long>(g.pool().second));

        for (uint32_t i = 0; i < kReplays; i++) exec.launch(s);
        std::vector<float> host = y.to_vector();  // waits for the replays
        const float expected = 2.0f * kReplays;
        for (float v : host) {
            if (v != expected) {
                std::fprintf(stderr, "wrong result %g, expected %g\n", v, expected);
                return 1;
            }
        }
        std::printf("%u replays: y = %g everywhere (OK)\n", kReplays, host[0]);
        return 0;
    } catch (const mtiart::error &e) {
        std::fprintf(stderr, "error: %s (status %d)\n", e.what(), e.status());
        return 1;
    }
}
