/* What the runtime shows of its work: graph pictures (node labels, buffer descriptions,
 * stream clusters, node kinds), allocation names, the timeline trace, memory history. */
#include "test_util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *dot_of(mtiart_graph g, uint32_t flags) {
    size_t len = 0;
    CHECK_OK(mtiart_graph_to_dot_with_flags(g, flags, NULL, 0, &len));
    char *dot = malloc(len + 1);
    size_t again = 0;
    CHECK_OK(mtiart_graph_to_dot_with_flags(g, flags, dot, len + 1, &again));
    CHECK(again == len && strlen(dot) == len);
    return dot;
}

/* The attribute list of node `id` ("n3") in `dot` (a static copy), or "" if absent. */
static const char *node_attrs(const char *dot, const char *id) {
    static char attrs[2048];
    char key[64];
    snprintf(key, sizeof key, " %s [", id); /* at any depth */
    const char *at = strstr(dot, key);
    attrs[0] = '\0';
    if (!at) return attrs;
    at += strlen(key);
    const char *end = strstr(at, "];\n");
    size_t n = end ? (size_t)(end - at) : 0;
    if (n >= sizeof attrs) n = sizeof attrs - 1;
    memcpy(attrs, at, n);
    attrs[n] = '\0';
    return attrs;
}

/* Whether the cluster of stream `stream_id` lists node `id`. */
static int in_stream_cluster(const char *dot, uint64_t stream_id, const char *id) {
    char key[64], member[32];
    snprintf(key, sizeof key, "subgraph cluster_stream_%llu {", (unsigned long long)stream_id);
    const char *at = strstr(dot, key);
    if (!at) return 0;
    const char *end = strstr(at, "\n  }");
    snprintf(member, sizeof member, " %s;", id);
    const char *m = strstr(at, member);
    return m && m < end;
}

static int32_t k_user(void *const *args, uint32_t block, uint32_t num_blocks) {
    (void)args;
    (void)block;
    (void)num_blocks;
    return 0;
}

static mtiart_tensor_desc desc(void *data, mtiart_dtype dtype, int ndim, int64_t d0, int64_t d1) {
    mtiart_tensor_desc t = {.data = data, .dtype = dtype, .ndim = ndim};
    t.shape[0] = d0;
    t.shape[1] = d1;
    return t;
}

/* Two streams fork from s0 and join back: kernel-library ops, a described user kernel, a
 * named weight. */
static void test_dot_of_a_fork_join_capture(void) {
    CHECK_OK(mtiart_kernel_set_name(k_user, "k_user")); /* a static function has no symbol */
    mtiart_stream s0, s1;
    CHECK_OK(mtiart_stream_create(0, 0, &s0));
    CHECK_OK(mtiart_stream_create(0, 0, &s1));
    uint64_t id0, id1;
    CHECK_OK(mtiart_stream_get_id(s0, &id0));
    CHECK_OK(mtiart_stream_get_id(s1, &id1));
    float *w, *x, *y, *z;
    CHECK_OK(mtiart_malloc(0, 8 * 2 * sizeof(float), (void **)&w));
    CHECK_OK(mtiart_malloc(0, 4 * 8 * sizeof(float), (void **)&x));
    CHECK_OK(mtiart_malloc(0, 4 * 2 * sizeof(float), (void **)&y));
    CHECK_OK(mtiart_malloc(0, 4 * 8 * sizeof(float), (void **)&z));
    CHECK_OK(mtiart_memory_set_name(w + 3, "weights")); /* any address inside names it all */
    mtiart_tensor_desc tw = desc(w, MTIART_DTYPE_FLOAT32, 2, 8, 2);
    mtiart_tensor_desc tx = desc(x, MTIART_DTYPE_FLOAT32, 2, 4, 8);
    mtiart_tensor_desc ty = desc(y, MTIART_DTYPE_FLOAT32, 2, 4, 2);
    mtiart_tensor_desc tz = desc(z, MTIART_DTYPE_FLOAT32, 2, 4, 8);
    mtiart_event fork, join;
    CHECK_OK(mtiart_event_create(MTIART_EVENT_DEFAULT, &fork));
    CHECK_OK(mtiart_event_create(MTIART_EVENT_DEFAULT, &join));

    CHECK_OK(mtiart_stream_begin_capture(s0, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_op_fill(s0, &tx, 1.0, 0));                  /* n0 on s0 */
    CHECK_OK(mtiart_event_record(fork, s0));                    /* fork */
    CHECK_OK(mtiart_stream_wait_event(s1, fork));               /* s1 joins the capture */
    CHECK_OK(mtiart_op_matmul(s0, &ty, &tx, &tw));              /* n1 on s0 */
    CHECK_OK(mtiart_op_unary(s1, MTIART_UNARY_GELU, &tz, &tx)); /* n2 on s1 */
    mtiart_arg args[2] = {{MTIART_ARG_BUFFER_INOUT, 0, z, 4 * 8 * sizeof(float)},
                          {MTIART_ARG_BUFFER_IN, 0, w, 8 * 2 * sizeof(float)}};
    const mtiart_tensor_desc *tensors[2] = {&tz, NULL};
    CHECK_OK(mtiart_launch_kernel_described(s1, k_user, 3, args, 2, "my.module.scale", tensors));
    CHECK_OK(mtiart_event_record(join, s1));
    CHECK_OK(mtiart_stream_wait_event(s0, join));
    CHECK_OK(mtiart_launch_kernel(s0, k_user, 1, args, 1)); /* n4 after the join */
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s0, &g));

    size_t count;
    CHECK_OK(mtiart_graph_get_node_count(g, &count));
    CHECK(count == 5);
    char *dot = dot_of(g, MTIART_DOT_DEFAULT);
    CHECK(strstr(dot, "digraph") == dot && dot[strlen(dot) - 2] == '}');
    CHECK(strstr(node_attrs(dot, "n0"), "#0 fill") != NULL);
    CHECK(strstr(node_attrs(dot, "n0"), "W float32[4, 8]") != NULL);
    const char *mm = node_attrs(dot, "n1");
    CHECK(strstr(mm, "#1 matmul 4x8 @ 8x2") != NULL);
    CHECK(strstr(mm, "R float32[8, 2] \\\"weights\\\"") != NULL);
    CHECK(strstr(mm, "W float32[4, 2]") != NULL);
    CHECK(strstr(mm, "shape=box") != NULL);
    CHECK(strstr(node_attrs(dot, "n2"), "#2 gelu") != NULL);
    const char *user = node_attrs(dot, "n3");
    CHECK(strstr(user, "#3 my.module.scale") != NULL);
    CHECK(strstr(user, "RW float32[4, 8]") != NULL);
    /* a buffer the launcher did not describe: its size, and its name */
    CHECK(strstr(user, "R 64 bytes \\\"weights\\\"") != NULL);
    /* no addresses or block counts unless asked */
    CHECK(strstr(dot, "0x") == NULL && strstr(dot, "blocks=") == NULL);
    CHECK(strstr(node_attrs(dot, "n4"), "#4 k_user\\nRW 128 bytes") != NULL);
    /* the streams: one cluster each, the nodes in their stream's */
    CHECK(in_stream_cluster(dot, id0, "n0") && in_stream_cluster(dot, id0, "n1") &&
          in_stream_cluster(dot, id0, "n4"));
    CHECK(in_stream_cluster(dot, id1, "n2") && in_stream_cluster(dot, id1, "n3"));
    CHECK(!in_stream_cluster(dot, id0, "n2") && !in_stream_cluster(dot, id1, "n1"));
    /* each stream of the picture has a border colour of its own, whatever its id */
    CHECK(strstr(node_attrs(dot, "n0"), ", color=red,") != NULL);
    CHECK(strstr(node_attrs(dot, "n2"), ", color=darkgreen,") != NULL);
    CHECK(strstr(dot, "n0 -> n1;") && strstr(dot, "n0 -> n2;") && strstr(dot, "n2 -> n3;") &&
          strstr(dot, "n1 -> n4;") && strstr(dot, "n3 -> n4;"));
    free(dot);

    /* verbose: addresses, sizes and block counts as well */
    dot = dot_of(g, MTIART_DOT_VERBOSE);
    char addr[48];
    snprintf(addr, sizeof addr, "0x%llx +64", (unsigned long long)(uintptr_t)w);
    CHECK(strstr(node_attrs(dot, "n1"), addr) != NULL);
    CHECK(strstr(node_attrs(dot, "n3"), "blocks=3") != NULL);
    CHECK(strstr(node_attrs(dot, "n1"), "float32[8, 2]") != NULL);
    free(dot);
    /* the plain call is the verbose picture */
    size_t len, vlen;
    CHECK_OK(mtiart_graph_to_dot(g, NULL, 0, &len));
    CHECK_OK(mtiart_graph_to_dot_with_flags(g, MTIART_DOT_VERBOSE, NULL, 0, &vlen));
    CHECK(len == vlen);
    CHECK_STATUS(mtiart_graph_to_dot_with_flags(g, 2, NULL, 0, &len), MTIART_ERROR_INVALID_VALUE);

    /* The node keeps what it was told: renaming or freeing the weights afterwards changes
     * nothing in the picture; copies of the graph (instantiation, a child node) keep it. */
    CHECK_OK(mtiart_memory_set_name(w, "renamed"));
    mtiart_graph parent;
    size_t child;
    CHECK_OK(mtiart_graph_create(0, &parent));
    CHECK_OK(mtiart_graph_add_child_graph_node(parent, NULL, 0, g, &child));
    dot = dot_of(parent, MTIART_DOT_DEFAULT);
    CHECK(strstr(node_attrs(dot, "n0_1"), "\\\"weights\\\"") != NULL);
    CHECK(strstr(dot, "renamed") == NULL);
    CHECK(strstr(node_attrs(dot, "n0"), "shape=box3d") != NULL);
    free(dot);

    char name[16];
    CHECK_OK(mtiart_memory_get_name(w + 1, name, sizeof name, &len));
    CHECK(strcmp(name, "renamed") == 0 && len == 7);
    CHECK_OK(mtiart_memory_get_name(x, name, sizeof name, &len));
    CHECK(strcmp(name, "") == 0 && len == 0);
    CHECK_OK(mtiart_memory_set_name(w, NULL)); /* removes it */
    CHECK_OK(mtiart_memory_get_name(w, name, sizeof name, &len));
    CHECK(len == 0);

    CHECK_OK(mtiart_graph_destroy(parent));
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_event_destroy(fork));
    CHECK_OK(mtiart_event_destroy(join));
    CHECK_OK(mtiart_free(w));
    CHECK_OK(mtiart_free(x));
    CHECK_OK(mtiart_free(y));
    CHECK_OK(mtiart_free(z));
    CHECK_OK(mtiart_stream_destroy(s0));
    CHECK_OK(mtiart_stream_destroy(s1));
}

/* Names: refused for memory that is not a live allocation; gone with the allocation. */
static void test_names_follow_allocations(void) {
    char host[16];
    size_t len;
    CHECK_STATUS(mtiart_memory_set_name(host, "x"), MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(mtiart_memory_set_name(NULL, "x"), MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(mtiart_memory_get_name(host, NULL, 0, &len), MTIART_ERROR_INVALID_POINTER);
    void *p;
    CHECK_OK(mtiart_malloc(0, 4096, &p));
    CHECK_STATUS(mtiart_memory_get_name(p, NULL, 4, &len), MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_memory_set_name(p, "a long name that is truncated"));
    char small[8];
    CHECK_OK(mtiart_memory_get_name(p, small, sizeof small, &len));
    CHECK(len == 29 && strcmp(small, "a long ") == 0);
    CHECK_OK(mtiart_free(p));
    CHECK_STATUS(mtiart_memory_set_name(p, "x"), MTIART_ERROR_INVALID_POINTER);
    void *q;
    CHECK_OK(mtiart_malloc(0, 4096, &q)); /* likely the same address again */
    CHECK_OK(mtiart_memory_get_name(q, small, sizeof small, &len));
    CHECK(len == 0);
    CHECK_OK(mtiart_free(q));
}

/* Every node kind has its own shape; hand-built nodes belong to no stream. */
static void test_dot_node_kinds(void) {
    mtiart_graph g, body;
    CHECK_OK(mtiart_graph_create(0, &g));
    CHECK_OK(mtiart_graph_create(0, &body));
    mtiart_event e;
    CHECK_OK(mtiart_event_create(MTIART_EVENT_DEFAULT, &e));
    int32_t *flag;
    CHECK_OK(mtiart_malloc(0, sizeof *flag, (void **)&flag));
    size_t n, b;
    CHECK_OK(mtiart_graph_add_empty_node(body, NULL, 0, &b));
    CHECK_OK(mtiart_graph_add_event_record_node(g, NULL, 0, e, &n));
    CHECK_OK(mtiart_graph_add_event_wait_node(g, &n, 1, e, &n));
    CHECK_OK(mtiart_graph_add_empty_node(g, &n, 1, &n));
    CHECK_OK(mtiart_graph_add_conditional_node(g, &n, 1, MTIART_CONDITIONAL_WHILE, flag,
                                               sizeof *flag, body, &n));
    uint32_t pattern = 7;
    CHECK_OK(mtiart_graph_add_fill_node(g, &n, 1, flag, &pattern, 4, 1, &n));
    char *dot = dot_of(g, MTIART_DOT_DEFAULT);
    CHECK(strstr(node_attrs(dot, "n0"), "shape=invhouse") != NULL);
    CHECK(strstr(node_attrs(dot, "n1"), "shape=house") != NULL);
    CHECK(strstr(node_attrs(dot, "n2"), "shape=ellipse") != NULL);
    CHECK(strstr(node_attrs(dot, "n3"), "shape=diamond") != NULL);
    CHECK(strstr(node_attrs(dot, "n3"), "conditional WHILE") != NULL);
    CHECK(strstr(node_attrs(dot, "n3"), "R 4 bytes") != NULL);
    CHECK(strstr(node_attrs(dot, "n4"), "shape=folder") != NULL);
    CHECK(strstr(dot, "subgraph cluster_n3") != NULL && strstr(dot, "n3 -> n3_0 [style=dashed]"));
    CHECK(strstr(dot, "cluster_stream") == NULL);
    free(dot);
    CHECK_OK(mtiart_graph_destroy(g));
    CHECK_OK(mtiart_graph_destroy(body));
    CHECK_OK(mtiart_event_destroy(e));
    CHECK_OK(mtiart_free(flag));
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    size_t got = fread(text, 1, (size_t)n, f);
    text[got] = '\0';
    fclose(f);
    return text;
}

static size_t count_of(const char *text, const char *what) {
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

/* The C interface of the trace: misuse refused, eager ops and a replay's nodes written. */
static void test_trace(void) {
    char path[64], bad[64];
    snprintf(path, sizeof path, "/tmp/mtiart-trace-%d.json", (int)getpid());
    snprintf(bad, sizeof bad, "/tmp/mtiart-no-such-dir-%d/t.json", (int)getpid());
    CHECK_STATUS(mtiart_trace_stop(NULL), MTIART_ERROR_NOT_PERMITTED);
    CHECK_STATUS(mtiart_trace_flush(path), MTIART_ERROR_NOT_PERMITTED);
    CHECK_STATUS(mtiart_trace_flush(NULL), MTIART_ERROR_INVALID_VALUE);

    mtiart_stream s;
    CHECK_OK(mtiart_stream_create(0, 0, &s));
    float *x;
    CHECK_OK(mtiart_malloc(0, 64 * sizeof(float), (void **)&x));
    mtiart_tensor_desc tx = desc(x, MTIART_DTYPE_FLOAT32, 1, 64, 0);
    CHECK_OK(mtiart_stream_begin_capture(s, MTIART_CAPTURE_MODE_GLOBAL, (mtiart_pool_id){0, 0}));
    CHECK_OK(mtiart_op_fill(s, &tx, 2.0, 0));
    CHECK_OK(mtiart_op_unary(s, MTIART_UNARY_SQRT, &tx, &tx));
    mtiart_graph g;
    CHECK_OK(mtiart_stream_end_capture(s, &g));
    mtiart_graph_exec exec;
    CHECK_OK(mtiart_graph_instantiate(g, &exec));
    CHECK_OK(mtiart_graph_destroy(g));

    CHECK_OK(mtiart_trace_start());
    CHECK_STATUS(mtiart_trace_start(), MTIART_ERROR_NOT_PERMITTED);
    CHECK_OK(mtiart_op_fill(s, &tx, 1.0, 0));
    CHECK_OK(mtiart_graph_launch(exec, s));
    CHECK_OK(mtiart_graph_launch(exec, s));
    CHECK_OK(mtiart_stream_synchronize(s));
    CHECK_OK(mtiart_graph_exec_destroy(exec)); /* the trace keeps what it points at */
    CHECK_STATUS(mtiart_trace_flush(bad), MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_trace_stop(path));
    CHECK_STATUS(mtiart_trace_stop(path), MTIART_ERROR_NOT_PERMITTED);

    char *text = read_file(path);
    CHECK(text != NULL);
    if (text) {
        CHECK(strstr(text, "\"traceEvents\":[") != NULL);
        CHECK(count_of(text, "\"ph\":\"X\"") == 1 + 2 + 2 * 2); /* fill, 2 replays of 2 */
        CHECK(count_of(text, "\"name\":\"graph replay\"") == 2);
        CHECK(count_of(text, "\"name\":\"sqrt\"") == 2);
        CHECK(count_of(text, "\"name\":\"fill 2\"") == 2);
        CHECK(count_of(text, "\"name\":\"fill 1\"") == 1);
        CHECK(count_of(text, "\"bytes\":256") == 2 * 2);
        CHECK(strstr(text, "\"thread_name\"") != NULL);
        free(text);
    }
    remove(path);
    /* a stop that cannot write still stops, and leaves nothing */
    CHECK_OK(mtiart_trace_start());
    CHECK_STATUS(mtiart_trace_stop(bad), MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_trace_start());
    CHECK_OK(mtiart_trace_stop(NULL));
    CHECK_OK(mtiart_free(x));
    CHECK_OK(mtiart_stream_destroy(s));
}

/* Memory history: each allocation's C caller, the log of allocations and frees. */
static void test_memory_history(void) {
    CHECK_STATUS(mtiart_memory_record_history(1, 0, 0), MTIART_ERROR_INVALID_VALUE);
    CHECK_STATUS(mtiart_memory_record_history(1, MTIART_MAX_HISTORY_FRAMES + 1, 0),
                 MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_memory_record_history(1, 8, 0));
    void *p, *q;
    CHECK_OK(mtiart_malloc(0, 1000, &p));
    mtiart_stream s;
    CHECK_OK(mtiart_stream_get_default(0, &s));
    CHECK_OK(mtiart_malloc_async(s, 2000, &q));
    void *frames[8];
    size_t count = 0;
    CHECK_OK(mtiart_memory_get_block_frames((char *)p + 10, frames, 8, &count));
    /* innermost first: the return address into this function */
    uintptr_t here = (uintptr_t)(void *)test_memory_history;
    CHECK(count >= 2 && count <= 8 && (uintptr_t)frames[0] - here < 4096);
    size_t none = 0;
    CHECK_OK(mtiart_memory_get_block_frames(q, NULL, 0, &none));
    CHECK(none >= 2);
    char host[8];
    CHECK_STATUS(mtiart_memory_get_block_frames(host, frames, 8, &count),
                 MTIART_ERROR_INVALID_POINTER);
    CHECK_STATUS(mtiart_memory_get_block_frames(p, NULL, 8, &count), MTIART_ERROR_INVALID_VALUE);
    CHECK_OK(mtiart_free(p));
    mtiart_memory_event log[8];
    CHECK_OK(mtiart_memory_get_history(log, 8, &count));
    CHECK(count == 3);
    CHECK(log[0].action == MTIART_MEMORY_ALLOC && log[0].size == 1000 &&
          log[0].address == (uint64_t)(uintptr_t)p && log[0].device == 0);
    CHECK(log[1].action == MTIART_MEMORY_ALLOC && log[1].size == 2000);
    CHECK(log[2].action == MTIART_MEMORY_FREE && log[2].size == 1000 &&
          log[2].address == (uint64_t)(uintptr_t)p);
    CHECK(log[0].time_ns <= log[1].time_ns && log[1].time_ns <= log[2].time_ns);
    /* a bounded log keeps the latest */
    CHECK_OK(mtiart_memory_record_history(1, 4, 2));
    void *r[3];
    for (int i = 0; i < 3; i++) CHECK_OK(mtiart_malloc(0, 64 * (size_t)(i + 1), &r[i]));
    CHECK_OK(mtiart_memory_get_history(log, 8, &count));
    CHECK(count == 2 && log[0].size == 128 && log[1].size == 192);
    /* off: nothing more recorded, what was stays */
    CHECK_OK(mtiart_memory_record_history(0, 0, 0));
    void *late;
    CHECK_OK(mtiart_malloc(0, 64, &late));
    CHECK_OK(mtiart_memory_get_block_frames(late, frames, 8, &count));
    CHECK(count == 0);
    CHECK_OK(mtiart_memory_get_block_frames(r[2], frames, 8, &count));
    CHECK(count >= 1 && count <= 4);
    CHECK_OK(mtiart_memory_get_history(NULL, 0, &count));
    CHECK(count == 2);
    CHECK_OK(mtiart_free(late));
    CHECK_OK(mtiart_free(q));
    for (int i = 0; i < 3; i++) CHECK_OK(mtiart_free(r[i]));

    /* many live allocations, freed out of order: each keeps its own stack and name */
    enum { MANY = 600 };
    static void *many[MANY];
    CHECK_OK(mtiart_memory_record_history(1, 2, 0));
    for (int i = 0; i < MANY; i++) {
        CHECK_OK(mtiart_malloc(0, 512 + 8 * (size_t)(i % 7), &many[i]));
        if (i % 5 == 0) CHECK_OK(mtiart_memory_set_name(many[i], "fifth"));
    }
    for (int i = MANY - 1; i >= 0; i -= 2) CHECK_OK(mtiart_free(many[i]));
    for (int i = 0; i < MANY; i += 2) {
        CHECK_OK(mtiart_memory_get_block_frames(many[i], frames, 8, &count));
        CHECK(count >= 1);
        char name[8];
        size_t len;
        CHECK_OK(mtiart_memory_get_name(many[i], name, sizeof name, &len));
        CHECK(i % 5 == 0 ? strcmp(name, "fifth") == 0 : len == 0);
    }
    CHECK_OK(mtiart_memory_get_history(NULL, 0, &count));
    CHECK(count == MANY + MANY / 2);
    CHECK_OK(mtiart_memory_record_history(0, 0, 0));
    for (int i = 0; i < MANY; i += 2) CHECK_OK(mtiart_free(many[i]));
}

int main(void) {
    CHECK_OK(mtiart_init());
    test_dot_of_a_fork_join_capture();
    test_names_follow_allocations();
    test_dot_node_kinds();
    test_trace();
    test_memory_history();
    TEST_MAIN_END();
}
