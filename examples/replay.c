/*
 * replay.c - replay a graph saved by another program (in Python: MTIAGraph.save), with no
 * Python in the process.
 *
 * Loads FILE, instantiates it, binds its input "x" and output "y" to device buffers of
 * their saved sizes, then for each input in INPUTS (raw float32 batches of x's size, back
 * to back) copies it into x, replays the graph and appends y to OUTPUTS. Constants (the
 * weights) come from the file itself.
 *
 *     cc replay.c $(pkg-config --cflags --libs mtiart) -o replay
 *     ./replay mlp.mtg inputs.f32 outputs.f32
 *
 * (examples/replay.cpp is the same through the C++ header.)
 */
#include <stdio.h>
#include <stdlib.h>

#include "mtiart.h"

#define CHECK(call)                                                                                \
    do {                                                                                           \
        mtiart_status check_status_ = (call);                                                      \
        if (check_status_ != MTIART_SUCCESS) {                                                     \
            fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #call,               \
                    mtiart_status_name(check_status_), mtiart_last_error_message());               \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s GRAPH_FILE INPUTS OUTPUTS\n", argv[0]);
        return 2;
    }
    /* The file names no user-kernel library: refuse any, so that a file from elsewhere
     * cannot make this program load code. */
    mtiart_load_options options = {MTIART_LOAD_BUILTIN_KERNELS_ONLY, 0, NULL};
    mtiart_graph graph;
    mtiart_graph_exec exec;
    CHECK(mtiart_graph_load(argv[1], 0, &options, &graph));
    CHECK(mtiart_graph_instantiate(graph, &exec));
    CHECK(mtiart_graph_destroy(graph));

    size_t x_bytes, y_bytes;
    CHECK(mtiart_graph_exec_get_binding_size(exec, "x", &x_bytes));
    CHECK(mtiart_graph_exec_get_binding_size(exec, "y", &y_bytes));
    void *x, *y;
    CHECK(mtiart_malloc(0, x_bytes, &x));
    CHECK(mtiart_malloc(0, y_bytes, &y));
    CHECK(mtiart_graph_exec_bind(exec, "x", x, x_bytes));
    CHECK(mtiart_graph_exec_bind(exec, "y", y, y_bytes));

    FILE *in = fopen(argv[2], "rb"), *out = fopen(argv[3], "wb");
    if (!in || !out) {
        perror("replay: opening the inputs or outputs");
        return 1;
    }
    mtiart_stream s;
    CHECK(mtiart_stream_create(0, 0, &s));
    char *x_host = malloc(x_bytes), *y_host = malloc(y_bytes);
    int replays = 0;
    while (x_host && y_host && fread(x_host, 1, x_bytes, in) == x_bytes) {
        CHECK(mtiart_memcpy_async(s, x, x_host, x_bytes, MTIART_MEMCPY_HOST_TO_DEVICE));
        CHECK(mtiart_graph_launch(exec, s));
        CHECK(mtiart_memcpy(s, y_host, y, y_bytes, MTIART_MEMCPY_DEVICE_TO_HOST));
        if (fwrite(y_host, 1, y_bytes, out) != y_bytes) {
            perror("replay: writing the outputs");
            return 1;
        }
        replays++;
    }
    fclose(in);
    if (fclose(out)) {
        perror("replay: writing the outputs");
        return 1;
    }
    printf("replayed %s %d times (x: %zu bytes, y: %zu bytes)\n", argv[1], replays, x_bytes,
           y_bytes);
    free(x_host);
    free(y_host);
    CHECK(mtiart_graph_exec_destroy(exec));
    CHECK(mtiart_free(x));
    CHECK(mtiart_free(y));
    CHECK(mtiart_stream_destroy(s));
    return 0;
}
