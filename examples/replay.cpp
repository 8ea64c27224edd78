/*
 * replay.cpp - examples/replay.c through the C++ header: load a saved graph, bind its
 * input "x" and output "y", replay it once per input batch of INPUTS, write every y to
 * OUTPUTS. Owners release the executable, buffers and stream, also when a call throws.
 *
 *     c++ -std=c++17 replay.cpp $(pkg-config --cflags --libs mtiart) -o replay_cpp
 *     ./replay_cpp mlp.mtg inputs.f32 outputs.f32
 */
#include <cstdio>
#include <fstream>
#include <vector>

#include "mtiart.hpp"

int main(int argc, char **argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s GRAPH_FILE INPUTS OUTPUTS\n", argv[0]);
        return 2;
    }
    try {
        /* No user-kernel library may be loaded on the file's say. */
        mtiart_load_options options{MTIART_LOAD_BUILTIN_KERNELS_ONLY, 0, nullptr};
        mtiart::executable exec = mtiart::graph::load(argv[1], 0, &options).instantiate();
        mtiart::stream s;
        mtiart::device_buffer<float> x(exec.binding_size("x") / sizeof(float), s);
        mtiart::device_buffer<float> y(exec.binding_size("y") / sizeof(float), s);
        exec.bind("x", x);
        exec.bind("y", y);

        std::ifstream in(argv[2], std::ios::binary);
        std::ofstream out(argv[3], std::ios::binary);
        if (!in || !out) {
            std::fprintf(stderr, "replay_cpp: cannot open the inputs or outputs\n");
            return 1;
        }
        std::vector<float> x_host(x.size()), y_host(y.size());
        int replays = 0;
        while (in.read(reinterpret_cast<char *>(x_host.data()),
                       static_cast<std::streamsize>(x.bytes()))) {
            x.upload(x_host, s);
            exec.launch(s);
            y.download(y_host, s);
            out.write(reinterpret_cast<const char *>(y_host.data()),
                      static_cast<std::streamsize>(y.bytes()));
            replays++;
        }
        if (!out.flush()) {
            std::fprintf(stderr, "replay_cpp: cannot write the outputs\n");
            return 1;
        }
        std::printf("replayed %s %d times (x: %zu bytes, y: %zu bytes)\n", argv[1], replays,
                    x.bytes(), y.bytes());
        return 0;
    } catch (const mtiart::error &e) {
        std::fprintf(stderr, "replay_cpp: %s\n", e.what());
        return 1;
    }
}
