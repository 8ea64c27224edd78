/* A user-kernel library for test_serialize: built twice (libsertest_a.so, libsertest_b.so)
 * so that a test can name a library that is not loaded yet. */
#include <stdint.h>
#include <string.h>

/* args: float *data (INOUT), float factor, uint64_t count. */
__attribute__((visibility("default"))) int32_t sertest_scale(void *const *args, uint32_t block,
                                                             uint32_t num_blocks) {
    float *data = *(float *const *)args[0];
    float factor;
    uint64_t count;
    memcpy(&factor, args[1], sizeof factor);
    memcpy(&count, args[2], sizeof count);
    for (uint64_t i = block; i < count; i += num_blocks) data[i] *= factor;
    return 0;
}

/* args: int32_t *counter (INOUT): decrements it; a WHILE body's loop counter. */
__attribute__((visibility("default"))) int32_t sertest_countdown(void *const *args, uint32_t block,
                                                                 uint32_t num_blocks) {
    (void)block;
    (void)num_blocks;
    int32_t *counter = *(int32_t *const *)args[0];
    if (*counter > 0) --*counter;
    return 0;
}
