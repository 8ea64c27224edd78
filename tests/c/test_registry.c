/* The registry of built-in kernels (internal API, so this program links the library's
 * objects): stable ids both ways, names, and the description of every kind of launch. */
#include "internal.h"
#include "kernels/kernels.h"
#include "test_util.h"

#include <string.h>

static mtiart_stream s;

/* A device tensor of `n` float32 (or `dtype`) elements. */
static mtiart_tensor_desc tensor(int32_t dtype, int ndim, const int64_t *shape) {
    mtiart_tensor_desc d;
    memset(&d, 0, sizeof d);
    d.dtype = dtype;
    d.ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)(d.shape[i] = shape[i]);
    CHECK_OK(mtiart_malloc(0, n * mtiart_dtype_size(dtype) + 8, &d.data));
    CHECK_OK(mtiart_memset_async(s, d.data, 0, n * mtiart_dtype_size(dtype)));
    return d;
}

static int32_t user_kernel(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args, (void)block, (void)num_blocks;
    return 0;
}

static void test_ids(void) {
    /* Ids are dense from 1 today, unique, and map back to the same function. */
    int found = 0;
    for (uint32_t id = 1; id < 64; id++) {
        mtiart_kernel_fn fn = mt_builtin_kernel_by_id(id);
        if (!fn) continue;
        found++;
        CHECK(mt_builtin_kernel_id(fn) == id);
        const char *name = mt_builtin_kernel_name(fn);
        CHECK(name && strncmp(name, "mtiart_", 7) == 0);
        const mt_kdef *def = mt_k_find(fn);
        CHECK(def && def->describe && def->validate);
        /* A saved launch too short for its parameters, or naming buffers it lacks, is
         * refused with the argument at fault and a reason. */
        uint8_t zeros[512] = {0};
        char why[200] = "";
        CHECK(mt_builtin_kernel_validate(fn, zeros, 1, NULL, NULL, 0, 1, why, sizeof why) == 0);
        CHECK(strstr(why, "parameter bytes") != NULL);
        why[0] = 0;
        CHECK(mt_builtin_kernel_validate(fn, zeros, sizeof zeros, NULL, NULL, 0, 1, why,
                                         sizeof why) == 0);
        CHECK(why[0] != 0);
        for (uint32_t other = 1; other < id; other++) {
            mtiart_kernel_fn f2 = mt_builtin_kernel_by_id(other);
            CHECK(f2 != fn);
            if (f2) CHECK(strcmp(mt_builtin_kernel_name(f2), name) != 0);
        }
    }
    CHECK(found >= 14);
    CHECK(mt_builtin_kernel_by_id(0) == NULL);
    CHECK(mt_builtin_kernel_by_id(100000) == NULL);
    CHECK(mt_builtin_kernel_id(user_kernel) == 0);
    CHECK(mt_builtin_kernel_id(NULL) == 0);
    CHECK(mt_builtin_kernel_name(user_kernel) == NULL);
}

/* Capture one call of each kind and compare every node's description, in order. */
static void test_describe(void) {
    mtiart_tensor_desc x = tensor(MTIART_DTYPE_FLOAT32, 2, (int64_t[]){32, 256});
    mtiart_tensor_desc w = tensor(MTIART_DTYPE_FLOAT32, 2, (int64_t[]){256, 512});
    mtiart_tensor_desc h = tensor(MTIART_DTYPE_FLOAT32, 2, (int64_t[]){32, 512});
    mtiart_tensor_desc b = tensor(MTIART_DTYPE_FLOAT32, 1, (int64_t[]){512});
    mtiart_tensor_desc r = tensor(MTIART_DTYPE_FLOAT32, 1, (int64_t[]){32});
    mtiart_tensor_desc i = tensor(MTIART_DTYPE_INT64, 2, (int64_t[]){32, 512});
    mtiart_tensor_desc m = tensor(MTIART_DTYPE_BOOL, 2, (int64_t[]){32, 512});
    mtiart_tensor_desc big = tensor(MTIART_DTYPE_FLOAT32, 1, (int64_t[]){1 << 20});
    mtiart_tensor_desc one = tensor(MTIART_DTYPE_FLOAT32, 0, NULL);
    CHECK_OK(mtiart_stream_synchronize(s));

    mtiart_pool_id pool = {0, 0};
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, pool));
    CHECK_OK(mtiart_op_matmul(s, &h, &x, &w));
    CHECK_OK(mtiart_op_binary(s, MTIART_BINARY_ADD, &h, &h, &b));
    CHECK_OK(mtiart_op_binary(s, MTIART_BINARY_MUL, &h, &h, &h));
    CHECK_OK(mtiart_op_binary_scalar(s, MTIART_BINARY_ADD, &h, &h, 1.0, 0, 0));
    CHECK_OK(mtiart_op_binary_scalar(s, MTIART_BINARY_SUB, &h, &h, 0.5, 0, 1));
    CHECK_OK(mtiart_op_unary(s, MTIART_UNARY_RELU, &h, &h));
    CHECK_OK(mtiart_op_unary(s, MTIART_UNARY_GELU, &h, &h));
    CHECK_OK(mtiart_op_reduce(s, MTIART_REDUCE_SUM, &r, &h, 1, 0));
    CHECK_OK(mtiart_op_reduce(s, MTIART_REDUCE_MEAN, &one, &h, MTIART_REDUCE_ALL, 0));
    CHECK_OK(mtiart_op_softmax(s, &h, &h, -1));
    CHECK_OK(mtiart_op_cast(s, &i, &h));
    CHECK_OK(mtiart_op_fill(s, &h, 2.5, 0));
    CHECK_OK(mtiart_op_fill(s, &i, 0.0, -3));
    CHECK_OK(mtiart_op_arange(s, &h, 0.0, 1.0));
    CHECK_OK(mtiart_op_where(s, &h, &m, &h, &h));
    CHECK_OK(mtiart_op_reduce(s, MTIART_REDUCE_MAX, &one, &big, MTIART_REDUCE_ALL, 0));
    CHECK_OK(mtiart_launch_kernel(s, user_kernel, 1, NULL, 0));
    mtiart_graph graph;
    CHECK_OK(mtiart_stream_end_capture(s, &graph));

    static const char *const want[] = {
        "matmul 32x256 @ 256x512",
        "add broadcast",
        "mul",
        "add scalar=1",
        "sub scalar=0.5 first",
        "relu",
        "gelu",
        "sum dim=1",
        "mean",
        "softmax dim=-1",
        "cast float32->int64",
        "fill 2.5",
        "fill -3",
        "arange start=0 step=1",
        "where",
        /* a full reduction of a large tensor: partials, then their combination */
        "max (partials)",
        "max (combine)",
    };
    const size_t nwant = sizeof want / sizeof *want;
    mt_pin pin = {NULL};
    mt_graph *g = mt_handle_pin(MT_HANDLE_VALUE(graph), MT_KIND_GRAPH, &pin);
    CHECK(g != NULL);
    size_t k = 0;
    for (size_t n = 0; g && n < g->dag->num_nodes; n++) {
        mt_op *op = &g->dag->nodes[n].op;
        if (op->type != MT_OP_KERNEL) continue;
        char text[128];
        mt_kernel_describe(op->fn.kernel, mt_op_blob(op), text, sizeof text);
        if (k < nwant) {
            if (strcmp(text, want[k]) != 0)
                fprintf(stderr, "kernel node %zu: described as '%s', expected '%s'\n", k, text,
                        want[k]);
            CHECK(strcmp(text, want[k]) == 0);
        } else {
            /* the user's kernel: described by its name */
            CHECK(strcmp(text, "user_kernel") == 0 || strncmp(text, "kernel@", 7) == 0);
        }
        k++;
    }
    CHECK(k == nwant + 1);
    mt_pin_release(&pin);

    /* A name the program gives a built-in wins over the registry's. */
    mtiart_node_info info;
    CHECK_OK(mtiart_graph_get_node_info(graph, 3, &info));
    CHECK(strcmp(info.name, "mtiart_binary_scalar") == 0);
    CHECK_OK(mtiart_graph_get_node_info(graph, 0, &info));
    CHECK(strcmp(info.name, "mtiart_matmul") == 0);
    CHECK_OK(mtiart_kernel_set_name(mt_builtin_kernel_by_id(MT_KID_MATMUL), "gemm"));
    CHECK_OK(mtiart_graph_get_node_info(graph, 0, &info));
    CHECK(strcmp(info.name, "gemm") == 0);
    CHECK_OK(mtiart_kernel_set_name(mt_builtin_kernel_by_id(MT_KID_MATMUL), "mtiart_matmul"));
    CHECK_OK(mtiart_graph_destroy(graph));

    mtiart_tensor_desc *all[] = {&x, &w, &h, &b, &r, &i, &m, &big, &one};
    for (size_t t = 0; t < sizeof all / sizeof *all; t++) CHECK_OK(mtiart_free(all[t]->data));
}

int main(void) {
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    test_ids();
    test_describe();
    CHECK_OK(mtiart_stream_destroy(s));
    TEST_MAIN_END();
}
