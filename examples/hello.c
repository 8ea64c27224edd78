/*
 * hello.c - a first libmtiart program.
 *
 * Copies an array to the device, doubles it with a user kernel, captures the same kernel
 * into a graph, replays the graph ten times, copies the result back and checks it.
 *
 * Build against an installed libmtiart:
 *     cc hello.c $(pkg-config --cflags --libs mtiart) -o hello && ./hello
 */
#include <stdio.h>
#include <stdlib.h>

#include "mtiart.h"

/* Check a libmtiart call; on failure print the status name and the detailed message. */
#define CHECK(call)                                                                                \
    do {                                                                                           \
        mtiart_status check_status_ = (call);                                                      \
        if (check_status_ != MTIART_SUCCESS) {                                                     \
            fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #call,               \
                    mtiart_status_name(check_status_), mtiart_last_error_message());               \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define N 16
#define REPLAYS 10

/* The value argument of the kernel: plain bytes, copied at launch. */
typedef struct scale_params {
    float factor;
    uint32_t count;
} scale_params;

/*
 * A kernel runs once per block, possibly on several workers at once. args[i] points at
 * argument i: for a buffer, *(float **)args[i] is the device pointer; for a value, args[i]
 * points at a copy of its bytes. Each block scales its own slice of the array.
 */
static int32_t scale_kernel(void *const *args, uint32_t block, uint32_t num_blocks) {
    float *data = *(float *const *)args[0];
    const scale_params *p = (const scale_params *)args[1];
    uint32_t per_block = (p->count + num_blocks - 1) / num_blocks;
    uint32_t begin = block * per_block;
    uint32_t end = begin + per_block < p->count ? begin + per_block : p->count;
    for (uint32_t i = begin; i < end; i++) data[i] *= p->factor;
    return 0;
}

/* Enqueue scale_kernel on `stream`: data[0..count) *= factor, in 4 blocks. */
static void launch_scale(mtiart_stream stream, float *data, uint32_t count, float factor) {
    scale_params params = {factor, count};
    mtiart_arg args[2] = {
        {MTIART_ARG_BUFFER_INOUT, 0, data, count * sizeof(float)},
        {MTIART_ARG_VALUE, sizeof params, &params, 0},
    };
    CHECK(mtiart_launch_kernel(stream, scale_kernel, 4, args, 2));
}

int main(void) {
    int device_count = 0;
    mtiart_device_properties props;
    mtiart_stream stream;
    mtiart_graph graph;
    mtiart_graph_exec exec;
    mtiart_pool_id new_private_pool = {0, 0};
    float host[N];
    void *memory = NULL;
    float *data;
    int ok = 1;

    printf("libmtiart %s\n", mtiart_version_string());
    CHECK(mtiart_init());
    CHECK(mtiart_device_count(&device_count));
    CHECK(mtiart_device_get_properties(0, &props));
    printf("%d device(s); device 0: %s, %d workers\n", device_count, props.name,
           (int)props.num_workers);

    CHECK(mtiart_stream_create(0, 0, &stream));
    CHECK(mtiart_kernel_set_name(scale_kernel, "scale"));

    /* Device memory, stream-ordered, filled from the host. */
    for (int i = 0; i < N; i++) host[i] = (float)i;
    CHECK(mtiart_malloc_async(stream, sizeof host, &memory));
    data = memory;
    CHECK(mtiart_memcpy_async(stream, data, host, sizeof host, MTIART_MEMCPY_HOST_TO_DEVICE));

    /* Run the kernel once, eagerly: data = 2 * i. */
    launch_scale(stream, data, N, 2.0f);

    /* Capture the same launch into a graph instead of running it... */
    CHECK(mtiart_stream_begin_capture(stream, MTIART_CAPTURE_MODE_GLOBAL, new_private_pool));
    launch_scale(stream, data, N, 2.0f);
    CHECK(mtiart_stream_end_capture(stream, &graph));

    /* ...then instantiate it and replay it: each replay doubles the data again. */
    CHECK(mtiart_graph_instantiate(graph, &exec));
    CHECK(mtiart_graph_destroy(graph));
    for (int r = 0; r < REPLAYS; r++) CHECK(mtiart_graph_launch(exec, stream));

    /* Copy back; mtiart_memcpy waits for everything enqueued before it. */
    CHECK(mtiart_memcpy(stream, host, data, sizeof host, MTIART_MEMCPY_DEVICE_TO_HOST));

    for (int i = 0; i < N; i++) {
        float expected = (float)i * 2.0f * (float)(1 << REPLAYS);
        printf("%s%g", i ? " " : "result: ", host[i]);
        if (host[i] != expected) ok = 0;
    }
    printf("\n");

    CHECK(mtiart_graph_exec_destroy(exec));
    CHECK(mtiart_free(data));
    CHECK(mtiart_stream_synchronize(stream));
    CHECK(mtiart_stream_destroy(stream));

    if (!ok) {
        fprintf(stderr, "wrong result: expected i * %d\n", 2 << REPLAYS);
        return 1;
    }
    printf("ok\n");
    return 0;
}
